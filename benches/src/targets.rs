//! Section 6: the project's targets beside what this run measured, each
//! with pass or miss and by how much.

use std::time::Duration;

use crate::cold_start::{Code, FunctionColdStarts, Language};
use crate::plan::REUSE_COUNT;
use crate::report::{Report, Table, format_count, format_kib, format_latency};
use crate::throughput::{Problem, Subject};

/// Cold start (request to first byte, median) of the Rust hello.
const COLD_START_RUST: Duration = Duration::from_millis(1);

/// Cold start (request to first byte, median) of the JavaScript hello.
const COLD_START_JS: Duration = Duration::from_millis(10);

/// Resident memory per registered, scaled-to-zero function, in KiB.
const RSS_PER_FUNCTION_KIB: f64 = 10.0;

/// The function count the start-up and `/metrics` targets are set at.
const READY_FUNCTIONS: usize = 100_000;

/// Spawn to `ready:` with [`READY_FUNCTIONS`] functions.
const READY_TIME: Duration = Duration::from_secs(1);

/// `/metrics` with [`READY_FUNCTIONS`] registered, 10,000 of them called
/// and all scaled to zero: its size, in KiB.
const METRICS_KIB: f64 = 5.0 * 1024.0;

/// The same scrape: its time.
const METRICS_TIME: Duration = Duration::from_millis(100);

/// The concurrency the throughput targets are set at.
const THROUGHPUT_CONNECTIONS: usize = 16;

/// Fresh instance per request with the default flags (the access log
/// on), over native hyper.
const FRESH_RATIO: f64 = 0.3;

/// Fresh instance per request with `--log-level warn`, over native hyper.
const FRESH_QUIET_RATIO: f64 = 0.35;

/// Instance reuse, over native hyper.
const REUSE_RATIO: f64 = 0.5;

/// A host at rest: its CPU time, as a share of one CPU.
const AT_REST_CPU: f64 = 0.002;

/// A host at rest: context switches of all its threads per second.
const AT_REST_WAKEUPS: f64 = 50.0;

/// First byte after a quiet spell, over native hyper's.
const WAKE_RATIO: f64 = 2.0;

/// One target and how the run fared.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The target, e.g. `≤ 1 ms`.
    pub goal: String,
    /// The figure, or why there is none.
    pub measured: String,
    /// Pass or miss and by how much; `None` when nothing was measured.
    pub verdict: Option<Verdict>,
}

/// Whether a target was met, and by how much.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Met, with the margin.
    Pass(String),
    /// Missed, with the shortfall.
    Miss(String),
}

/// Every target, against `report`'s figures.
pub fn evaluate(report: &Report) -> Vec<Target> {
    let mut targets = Vec::new();
    for (language, limit) in [
        (Language::Rust, COLD_START_RUST),
        (Language::JavaScript, COLD_START_JS),
    ] {
        for code in Code::ALL {
            let what = format!("cold start p50, {}, {}", language.label(), code.label());
            let function = report.cold_starts.function(code, language);
            targets.push(cold_start(what, function, limit));
        }
    }

    let largest = report.density.points.iter().map(|p| p.functions).max();
    // After traffic, at the largest count where every function was called.
    let all_called = report
        .density
        .points
        .iter()
        .map(|p| p.functions)
        .filter(|&n| n <= crate::density::CALLED_AT_MOST)
        .max();
    for (after_traffic, when) in [(false, "once ready"), (true, "after traffic")] {
        let count = if after_traffic { all_called } else { largest };
        let what = match count {
            Some(n) => format!(
                "RSS per scaled-to-zero function ({when}, N = {})",
                format_count(n as u64)
            ),
            None => format!("RSS per scaled-to-zero function ({when})"),
        };
        let per = count.and_then(|n| report.density.per_function_kib(n, after_traffic));
        targets.push(Target {
            what,
            goal: format!("≤ {}", format_kib(RSS_PER_FUNCTION_KIB)),
            measured: per.map_or_else(not_measured, format_kib),
            verdict: per.map(|kib| at_most(kib, RSS_PER_FUNCTION_KIB, format_kib)),
        });
    }

    let ready = report
        .density
        .point(READY_FUNCTIONS)
        .and_then(|p| p.ready.p50());
    targets.push(Target {
        what: format!(
            "spawn → `ready:` with {} functions",
            format_count(READY_FUNCTIONS as u64)
        ),
        goal: format!("≤ {}", format_latency(READY_TIME)),
        measured: ready.map_or_else(not_measured, format_latency),
        verdict: ready.map(|d| {
            at_most(d.as_secs_f64(), READY_TIME.as_secs_f64(), |s| {
                format_latency(Duration::from_secs_f64(s))
            })
        }),
    });

    let scrape = report.density.point(READY_FUNCTIONS);
    let at = format!(
        "{} functions, {} called",
        format_count(READY_FUNCTIONS as u64),
        format_count(crate::density::CALLED_AT_MOST as u64)
    );
    let size = scrape.map(|p| p.metrics_bytes as f64 / 1024.0);
    targets.push(Target {
        what: format!("`/metrics` size, {at}"),
        goal: format!("≤ {}", format_kib(METRICS_KIB)),
        measured: size.map_or_else(not_measured, format_kib),
        verdict: size.map(|kib| at_most(kib, METRICS_KIB, format_kib)),
    });
    let percent = |share: f64| format!("{:.2}%", share * 100.0);
    let rest = scrape.map(|p| p.rest_cpu);
    targets.push(Target {
        what: format!(
            "host CPU at rest, {at}, all scaled to zero (from {} after the last)",
            format_latency(crate::density::SETTLE)
        ),
        goal: format!("≤ {}", percent(AT_REST_CPU)),
        measured: rest.map_or_else(not_measured, percent),
        verdict: rest.map(|c| at_most(c, AT_REST_CPU, percent)),
    });
    let time = scrape.and_then(|p| p.metrics_time.p50());
    targets.push(Target {
        what: format!("`/metrics` time, {at}"),
        goal: format!("≤ {}", format_latency(METRICS_TIME)),
        measured: time.map_or_else(not_measured, format_latency),
        verdict: time.map(|d| {
            at_most(d.as_secs_f64(), METRICS_TIME.as_secs_f64(), |s| {
                format_latency(Duration::from_secs_f64(s))
            })
        }),
    });

    for (subject, goal) in [
        (
            Subject::Host {
                reuse: None,
                quiet: false,
            },
            FRESH_RATIO,
        ),
        (
            Subject::Host {
                reuse: None,
                quiet: true,
            },
            FRESH_QUIET_RATIO,
        ),
        (
            Subject::Host {
                reuse: Some(REUSE_COUNT),
                quiet: true,
            },
            REUSE_RATIO,
        ),
    ] {
        let what = format!(
            "{} at {THROUGHPUT_CONNECTIONS} connections, over native hyper",
            subject.label()
        );
        let ratio = report
            .throughput
            .ratio_to_native(subject, THROUGHPUT_CONNECTIONS);
        let unavailable = report
            .throughput
            .row(subject)
            .and_then(|row| match row.problem {
                Some(Problem::NotAvailable(_)) => Some("not available yet".to_owned()),
                _ => None,
            });
        targets.push(Target {
            what,
            goal: format!("≥ {goal:.2}×"),
            measured: match (ratio, unavailable) {
                (Some(r), _) => format!("{r:.2}×"),
                (None, Some(why)) => why,
                (None, None) => not_measured(),
            },
            verdict: ratio.map(|r| at_least(r, goal)),
        });
    }

    let host = report.at_rest.functions.first();
    let cpu = host.map(|h| h.cpu_share);
    targets.push(Target {
        what: "host CPU at rest".to_owned(),
        goal: format!("≤ {}", percent(AT_REST_CPU)),
        measured: cpu.map_or_else(not_measured, percent),
        verdict: cpu.map(|c| at_most(c, AT_REST_CPU, percent)),
    });
    let per_second = |n: f64| format!("{n:.1}/s");
    let wakeups = host.map(|h| h.wakeups_per_second);
    targets.push(Target {
        what: "host wake-ups at rest (context switches, all threads)".to_owned(),
        goal: format!("≤ {}", per_second(AT_REST_WAKEUPS)),
        measured: wakeups.map_or_else(not_measured, per_second),
        verdict: wakeups.map(|w| at_most(w, AT_REST_WAKEUPS, per_second)),
    });
    let ratio = report.at_rest.wake_ratio();
    let times = |r: f64| format!("{r:.2}×");
    targets.push(Target {
        what: "first byte after quiet, p50, over native hyper".to_owned(),
        goal: format!("≤ {}", times(WAKE_RATIO)),
        measured: ratio.map_or_else(not_measured, times),
        verdict: ratio.map(|r| at_most(r, WAKE_RATIO, times)),
    });
    targets
}

fn cold_start(what: String, function: Option<&FunctionColdStarts>, limit: Duration) -> Target {
    let goal = format!("≤ {}", format_latency(limit));
    let Some(function) = function else {
        return Target {
            what,
            goal,
            measured: not_measured(),
            verdict: None,
        };
    };
    let Some(p50) = function.cold.p50() else {
        return Target {
            what,
            goal,
            measured: not_measured(),
            verdict: None,
        };
    };
    let mut measured = format_latency(p50);
    if !function.is_valid() {
        measured.push_str(" (invalid: not every timed request was a cold start)");
    }
    Target {
        what,
        goal,
        measured,
        verdict: Some(at_most(p50.as_secs_f64(), limit.as_secs_f64(), |s| {
            format_latency(Duration::from_secs_f64(s))
        })),
    }
}

fn not_measured() -> String {
    "not measured in this run".to_owned()
}

/// `measured ≤ limit`, the margin shown with `format`.
fn at_most(measured: f64, limit: f64, format: impl Fn(f64) -> String) -> Verdict {
    let times = measured / limit;
    if measured <= limit {
        Verdict::Pass(format!(
            "{} under ({times:.2}× the target)",
            format(limit - measured)
        ))
    } else {
        Verdict::Miss(format!(
            "{} over ({times:.2}× the target)",
            format(measured - limit)
        ))
    }
}

/// `measured ≥ goal` for a ratio.
fn at_least(measured: f64, goal: f64) -> Verdict {
    if measured >= goal {
        Verdict::Pass(format!("{:.2} above", measured - goal))
    } else {
        Verdict::Miss(format!(
            "{:.2} short (needs {:.1}× the throughput measured)",
            goal - measured,
            goal / measured
        ))
    }
}

/// The section, as markdown.
pub fn render(targets: &[Target], densities: &[usize]) -> String {
    let mut out = String::from("## 7. Targets\n\n");
    if !densities.contains(&READY_FUNCTIONS) {
        out.push_str(&format!(
            "This run did not register {} functions (`--quick`).\n\n",
            format_count(READY_FUNCTIONS as u64)
        ));
    }
    let mut table = Table::new(&["target", "goal", "measured", "verdict"]);
    for t in targets {
        let verdict = match &t.verdict {
            Some(Verdict::Pass(margin)) => format!("**pass**: {margin}"),
            Some(Verdict::Miss(shortfall)) => format!("**miss**: {shortfall}"),
            None => "–".to_owned(),
        };
        table.row(vec![
            t.what.clone(),
            t.goal.clone(),
            t.measured.clone(),
            verdict,
        ]);
    }
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_by_how_much() {
        let ms = |s: f64| format_latency(Duration::from_secs_f64(s));
        assert_eq!(
            at_most(0.0025, 0.001, ms),
            Verdict::Miss("1.50 ms over (2.50× the target)".to_owned())
        );
        assert_eq!(
            at_most(0.0005, 0.001, ms),
            Verdict::Pass("500 µs under (0.50× the target)".to_owned())
        );
        assert_eq!(
            at_least(0.15, 0.3),
            Verdict::Miss("0.15 short (needs 2.0× the throughput measured)".to_owned())
        );
        assert_eq!(at_least(0.45, 0.3), Verdict::Pass("0.15 above".to_owned()));
    }
}
