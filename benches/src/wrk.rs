//! Runs `wrk` pinned to the client CPU and reads its `--latency` report.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::plan::{CLIENT_CPU, WRK_THREADS};

/// What one `wrk` run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    /// `Requests/sec`.
    pub requests_per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout), 0 when wrk prints none.
    pub socket_errors: u64,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
}

impl WrkResult {
    /// Errors of every kind: failed sockets and non-2xx answers.
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

/// Runs `wrk -t1 -c<connections> -d<duration> --latency <url>` on the
/// client CPU.
pub async fn run(url: &str, connections: usize, duration: Duration) -> anyhow::Result<WrkResult> {
    let output = Command::new("taskset")
        .args(["-c", &CLIENT_CPU.to_string(), "wrk"])
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk exited with {}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("cannot read wrk's report:\n{stdout}"))
}

/// Reads the report `wrk --latency` prints.
pub fn parse(report: &str) -> anyhow::Result<WrkResult> {
    let mut result = WrkResult {
        requests_per_sec: f64::NAN,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        requests: 0,
        socket_errors: 0,
        non_2xx: 0,
    };
    let (mut p50, mut p99, mut requests) = (None, None, None);
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => result.requests_per_sec = rate.parse()?,
            ["50%", latency] => p50 = Some(parse_latency(latency)?),
            ["99%", latency] => p99 = Some(parse_latency(latency)?),
            [count, "requests", "in", ..] => requests = Some(count.parse()?),
            ["Socket", "errors:", counts @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                result.socket_errors = counts
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["Non-2xx", "or", "3xx", "responses:", count] => result.non_2xx = count.parse()?,
            _ => {}
        }
    }
    if result.requests_per_sec.is_nan() {
        bail!("no `Requests/sec:` line");
    }
    result.p50 = p50.context("no 50% latency (was --latency given?)")?;
    result.p99 = p99.context("no 99% latency")?;
    result.requests = requests.context("no `N requests in` line")?;
    Ok(result)
}

/// Reads a latency as wrk prints it: `812.00us`, `1.25ms`, `2.00s`,
/// `1.50m`.
fn parse_latency(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency `{text}` has no unit"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("bad latency `{text}`"))?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("unknown unit in latency `{text}`"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Running 10s test @ http://127.0.0.1:41234/hello
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  400.00us   9.81ms   88.00%
    Req/Sec     7.61k   210.44     8.02k    71.00%
  Latency Distribution
     50%    2.05ms
     75%    2.21ms
     90%    2.48ms
     99%    4.12ms
  75748 requests in 10.00s, 7.15MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   7574.31
Transfer/sec:    732.12KB
";

    #[test]
    fn reads_the_latency_report() {
        let result = parse(REPORT).unwrap();
        assert_eq!(result.requests_per_sec, 7574.31);
        assert_eq!(result.p50, Duration::from_micros(2050));
        assert_eq!(result.p99, Duration::from_micros(4120));
        assert_eq!(result.requests, 75748);
        assert_eq!(result.socket_errors, 5);
        assert_eq!(result.non_2xx, 7);
        assert_eq!(result.errors(), 12);
    }

    #[test]
    fn a_report_without_latencies_is_refused() {
        let report = REPORT.replace("     50%    2.05ms\n", "");
        assert!(parse(&report).is_err());
    }

    #[test]
    fn reads_every_unit() {
        assert_eq!(parse_latency("1.50s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_latency("2.00m").unwrap(), Duration::from_secs(120));
        assert!(parse_latency("3.00xs").is_err());
    }
}
