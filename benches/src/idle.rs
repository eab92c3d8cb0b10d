//! Section 6: at rest. Most functions of an aggregated deployment see
//! sporadic traffic, so what a host costs with no request, and how fast it
//! answers the first request after a quiet spell, matter as much as its
//! throughput. The host (default flags, the Rust hello) and native hyper run
//! side by side on the server CPU, each having answered one request. Then,
//! round after round, both stay quiet for [`QUIET`], during which the
//! harness reads each one's CPU time and context switches (all threads,
//! from `/proc`), and then each gets one request on a new connection, timed
//! to its first byte; the order alternates between rounds. After [`PAUSE`]
//! more, each gets one more request the same way: what the first request
//! after a quiet spell costs beyond it is what the quiet spell itself undid.

use std::fmt::Write as _;
use std::time::Duration;

use crate::client;
use crate::manifest::{Function, Manifest};
use crate::plan::{Plan, SERVER_CPU};
use crate::proc_stats::{self, ThreadTimes};
use crate::report::{Table, format_latency_or_dash};
use crate::section::Section;
use crate::servers::{HELLO_BODY, Paths, Server};
use crate::stats::Sample;

/// How long both servers stay quiet before each round's requests.
pub const QUIET: Duration = Duration::from_secs(3);

/// The short pause before each round's second request.
pub const PAUSE: Duration = Duration::from_millis(20);

/// Rounds in a full run (3 in `--quick`). A first byte after a pause varies
/// by a factor of two or more from one request to the next on a virtual
/// machine, and so does the p50 of a few: in one probe of 400 requests to
/// each server 20 ms apart, the host's p50 over native hyper's ranged over
/// 1.6-3.5× in windows of 10 and 2.0-2.6× in windows of 30
/// (`benches/README.md`, "The first request after a pause").
pub const ROUNDS: usize = 30;

/// One server at rest.
#[derive(Debug, Clone)]
pub struct ServerAtRest {
    /// Which server.
    pub name: &'static str,
    /// Its CPU time over all quiet spells, as a share of one CPU.
    pub cpu_share: f64,
    /// Context switches of all its threads per second of quiet.
    pub wakeups_per_second: f64,
    /// Time to first byte of each first request after a quiet spell.
    pub first_byte: Sample,
    /// Time to first byte of each request [`PAUSE`] after another.
    pub after_pause: Sample,
}

/// Section 6's results: the host, then native hyper.
pub type AtRest = Section<ServerAtRest>;

/// Runs the section.
pub async fn measure_section(paths: &Paths, plan: &Plan) -> AtRest {
    Section::run("at rest", measure(paths, plan)).await
}

/// What is counted of one server over the quiet spells.
struct Tally {
    name: &'static str,
    cpu: Duration,
    switches: u64,
    quiet: Duration,
    first_bytes: Vec<Duration>,
    after_pause: Vec<Duration>,
}

async fn measure(paths: &Paths, plan: &Plan) -> anyhow::Result<Vec<ServerAtRest>> {
    let rounds = if plan.quick { 3 } else { ROUNDS };
    let manifest_path = paths.work.join("at-rest.toml");
    Manifest {
        function: vec![Function::new("hello", &paths.hello_wasm, "/...")],
    }
    .write(&manifest_path)?;
    let data = Paths::fresh_dir(&paths.work, "at-rest-data")?;
    let mut host = Server::host(paths, &manifest_path, &data).await?;
    host.wait_ready().await?;
    let native = Server::native(paths).await?;
    let servers = [(&host, "host (fresh instance)"), (&native, "native hyper")];
    let mut tallies: Vec<Tally> = servers
        .iter()
        .map(|(_, name)| Tally {
            name,
            cpu: Duration::ZERO,
            switches: 0,
            quiet: Duration::ZERO,
            first_bytes: Vec::new(),
            after_pause: Vec::new(),
        })
        .collect();
    for (server, _) in servers {
        client::get(server.addr, "/").await?.expect(HELLO_BODY)?;
    }
    for round in 0..rounds {
        let before: Vec<(ThreadTimes, u64)> = servers
            .iter()
            .map(|(server, _)| {
                Ok((
                    server.process.thread_times()?,
                    context_switches(server.process.pid())?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        tokio::time::sleep(QUIET).await;
        for ((server, _), (tally, (cpu, switches))) in
            servers.iter().zip(tallies.iter_mut().zip(before))
        {
            tally.cpu += server.process.thread_times()?.since(&cpu);
            tally.switches += context_switches(server.process.pid())?.saturating_sub(switches);
            tally.quiet += QUIET;
        }
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &i in &order {
            let answer = client::get(servers[i].0.addr, "/").await?;
            answer.expect(HELLO_BODY)?;
            tallies[i].first_bytes.push(answer.first_byte);
        }
        for &i in &order {
            tokio::time::sleep(PAUSE).await;
            let answer = client::get(servers[i].0.addr, "/").await?;
            answer.expect(HELLO_BODY)?;
            tallies[i].after_pause.push(answer.first_byte);
        }
    }
    Ok(tallies
        .into_iter()
        .map(|tally| ServerAtRest {
            name: tally.name,
            cpu_share: tally.cpu.as_secs_f64() / tally.quiet.as_secs_f64(),
            wakeups_per_second: tally.switches as f64 / tally.quiet.as_secs_f64(),
            first_byte: Sample::new(tally.first_bytes),
            after_pause: Sample::new(tally.after_pause),
        })
        .collect())
}

/// Voluntary and involuntary context switches of every thread of `pid`.
fn context_switches(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for (_, status) in proc_stats::thread_files(pid, "status")? {
        total += status
            .lines()
            .filter_map(|line| {
                let value = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))?;
                value.trim().parse::<u64>().ok()
            })
            .sum::<u64>();
    }
    Ok(total)
}

impl AtRest {
    /// The host's first-byte p50 after quiet over native hyper's.
    pub fn wake_ratio(&self) -> Option<f64> {
        self.host_over_native(|server| &server.first_byte)
    }

    /// The host's first-byte p50 after [`PAUSE`] over native hyper's.
    pub fn pause_ratio(&self) -> Option<f64> {
        self.host_over_native(|server| &server.after_pause)
    }

    fn host_over_native(&self, sample: impl Fn(&ServerAtRest) -> &Sample) -> Option<f64> {
        let [host, native] = self.functions.as_slice() else {
            return None;
        };
        let host = sample(host).p50()?.as_secs_f64();
        let native = sample(native).p50()?.as_secs_f64();
        (native > 0.0).then(|| host / native)
    }

    /// The section, as markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("## 6. At rest\n\n");
        let _ = writeln!(
            out,
            "The host (default flags, the Rust hello) and native hyper, side by side on CPU \
             {SERVER_CPU}, each having answered one request. In each round both stay quiet for \
             {} s, while the harness reads their CPU time (each thread's `schedstat`, to the \
             nanosecond) and context switches (all threads), \
             then each answers one request on a new connection, timed to its first byte (the \
             order alternates), and {} ms later one more the same way.\n",
            QUIET.as_secs(),
            PAUSE.as_millis()
        );
        if let Some(failure) = self.failure_line() {
            let _ = writeln!(out, "{failure}");
            return out;
        }
        let mut table = Table::new(&[
            "server",
            "CPU at rest",
            "wake-ups/s",
            "requests after quiet",
            "first byte p50",
            "first byte max",
            "p50 after a pause",
        ]);
        for server in &self.functions {
            table.row(vec![
                server.name.to_owned(),
                format!("{:.2}%", server.cpu_share * 100.0),
                format!("{:.1}", server.wakeups_per_second),
                server.first_byte.len().to_string(),
                format_latency_or_dash(server.first_byte.p50()),
                format_latency_or_dash(server.first_byte.max()),
                format_latency_or_dash(server.after_pause.p50()),
            ]);
        }
        out.push_str(&table.render());
        if let (Some(quiet), Some(pause)) = (self.wake_ratio(), self.pause_ratio()) {
            let _ = writeln!(
                out,
                "\nFirst byte, p50: after quiet the host takes {quiet:.2}× native hyper's; \
                 after a pause of {} ms, {pause:.2}×.\n",
                PAUSE.as_millis()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_context_switches_of_every_thread() {
        let before = context_switches(std::process::id()).unwrap();
        // A thread that sleeps switches out at least once, and is counted.
        std::thread::spawn(|| std::thread::sleep(Duration::from_millis(5)))
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(context_switches(std::process::id()).unwrap() > before);
    }
}
