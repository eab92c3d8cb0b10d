//! The markdown report: its header, the sections in order, and the helpers
//! every section formats its figures with.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cold_start::ColdStarts;
use crate::density::Density;
use crate::idle::AtRest;
use crate::machine::{self, BACKTRACE_VARIABLE, Machine};
use crate::plan::{CLIENT_CPU, Plan, SERVER_CPU};
use crate::reload::Reloads;
use crate::targets;
use crate::throughput::Throughput;
use crate::upload::Uploads;

/// Everything one run measured.
pub struct Report {
    /// How the run was planned.
    pub plan: Plan,
    /// The machine and the code.
    pub machine: Machine,
    /// How long the run took.
    pub elapsed: Duration,
    /// Section 1.
    pub throughput: Throughput,
    /// Section 2.
    pub cold_starts: ColdStarts,
    /// Section 3.
    pub density: Density,
    /// Section 4.
    pub reloads: Reloads,
    /// Section 5.
    pub uploads: Uploads,
    /// Section 6.
    pub at_rest: AtRest,
}

impl Report {
    /// The report, as markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.header());
        for section in [
            self.throughput.render(),
            self.cold_starts.render(),
            self.density.render(),
            self.reloads.render(),
            self.uploads.render(),
            self.at_rest.render(),
        ] {
            out.push_str(&section);
            out.push_str(&self.environment_note());
        }
        out.push_str(&targets::render(
            &targets::evaluate(self),
            self.plan.densities,
        ));
        out
    }

    /// The environment the servers ran in, stated beside each section's
    /// figures.
    fn environment_note(&self) -> String {
        format!(
            "_Servers ran with {} (this machine's setting, left as it is)._\n\n",
            self.backtrace()
        )
    }

    fn backtrace(&self) -> String {
        match &self.machine.rust_backtrace {
            Some(value) => format!("`{BACKTRACE_VARIABLE}={value}`"),
            None => format!("`{BACKTRACE_VARIABLE}` unset"),
        }
    }

    fn header(&self) -> String {
        let m = &self.machine;
        let mut out = String::from("# Shoal benchmarks\n\n");
        if self.plan.quick {
            out.push_str(
                "**Quick run** (`--quick`): short durations and few samples, to try the \
                 harness. Do not quote these figures.\n\n",
            );
        }
        let backtrace = self.backtrace();
        let uncommitted = if m.uncommitted.is_empty() {
            "none".to_owned()
        } else {
            m.uncommitted
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows = [
            ("Command", format!("`{}`", self.plan.command())),
            ("Date", m.date.clone()),
            ("Commit", format!("`{}`", m.commit)),
            ("Uncommitted changes", uncommitted),
            (
                "Machine",
                format!(
                    "`nproc` {}, {} (`/proc/cpuinfo`), Linux {}",
                    m.cpus, m.cpu_model, m.kernel
                ),
            ),
            ("Peer", format!("`{}` (from crates.io)", m.wasmtime)),
            (
                "Environment",
                format!("{backtrace} for every server measured (left as the machine sets it)"),
            ),
            (
                "CPUs",
                format!(
                    "servers pinned to CPU {SERVER_CPU} (`taskset -c {SERVER_CPU}`); `wrk` pinned \
                     to CPU {CLIENT_CPU}; this harness (the client of sections 2 and 3) allowed on \
                     CPU {}. Other processes on the machine were not pinned and could run on either CPU: the \
                     \"CPU {SERVER_CPU} busy\" column of section 1 shows how much of CPU \
                     {SERVER_CPU} went to something other than the server.",
                    m.harness_cpus
                ),
            ),
            (
                "Load average (1, 5, 15 min)",
                format!(
                    "{} at the start, {} at the end",
                    m.load_before,
                    machine::load_average()
                ),
            ),
            ("Duration of the run", format_duration_coarse(self.elapsed)),
        ];
        let mut table = Table::new(&["", ""]);
        for (name, value) in rows {
            table.row(vec![format!("**{name}**"), value]);
        }
        out.push_str(&table.render());
        out.push('\n');
        out
    }
}

/// A markdown table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, as markdown.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<&str> = (0..self.header.len())
                .map(|i| cells.get(i).map_or("", String::as_str))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.header);
        out.push_str(&line(&vec!["---".to_owned(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// A latency: `87 µs`, `1.24 ms`, `2.50 s`.
pub fn format_latency(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// An optional latency, `–` when absent.
pub fn format_latency_or_dash(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".to_owned(), format_latency)
}

/// A count with thousands separators: `12,345`.
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount of memory given in KiB: `812 KiB`, `23.4 MiB`.
pub fn format_kib(kib: f64) -> String {
    if kib.abs() < 1024.0 {
        format!("{kib:.1} KiB")
    } else {
        format!("{:.1} MiB", kib / 1024.0)
    }
}

/// A duration in minutes and seconds: `14 min 5 s`.
pub fn format_duration_coarse(d: Duration) -> String {
    let secs = d.as_secs();
    let mut out = String::new();
    if secs >= 60 {
        let _ = write!(out, "{} min ", secs / 60);
    }
    let _ = write!(out, "{} s", secs % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_figures() {
        assert_eq!(format_latency(Duration::from_micros(87)), "87 µs");
        assert_eq!(format_latency(Duration::from_micros(1240)), "1.24 ms");
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_kib(512.0), "512.0 KiB");
        assert_eq!(format_kib(2048.0), "2.0 MiB");
        assert_eq!(
            format_duration_coarse(Duration::from_secs(845)),
            "14 min 5 s"
        );
    }

    #[test]
    fn renders_a_table() {
        let mut table = Table::new(&["a", "b"]);
        table.row(vec!["1".to_owned()]);
        assert_eq!(table.render(), "| a | b |\n| --- | --- |\n| 1 |  |\n");
    }
}
