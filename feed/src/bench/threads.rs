//! CPU time and run-queue wait of this process's threads by role, from Linux's
//! `/proc/self/task/*/schedstat` (time on a CPU and time runnable but waiting for one, in
//! nanoseconds): how much CPU the server, the clients and the pipeline used during the
//! order flow, and how long they waited for a CPU. On a 2-vCPU machine shared with other
//! work, the wait says whether a latency tail is the feed's or the machine's: a server that
//! waits for a CPU writes late, whatever its write schedule.

use std::collections::HashMap;

/// `ws-server` (the feed's runtime), `ws-clients` (the bench's clients), `bourse-*` (the
/// engine's pipeline and the feed's own threads); anything else is not counted.
fn role(comm: &str) -> Option<usize> {
    match comm {
        "ws-server" => Some(0),
        "ws-clients" => Some(1),
        c if c.starts_with("bourse-") => Some(2),
        _ => None,
    }
}

/// This process's threads at one moment.
#[derive(Debug, Default)]
pub struct Snapshot(Vec<TaskStat>);

/// One thread of a process as `/proc/PID/task/TID` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStat {
    pub tid: u32,
    /// The thread's name (`comm`, at most 15 bytes), trimmed.
    pub name: String,
    /// Nanoseconds on a CPU, and runnable but waiting for one (`schedstat`).
    pub cpu_ns: u64,
    pub wait_ns: u64,
    /// `voluntary_ctxt_switches` of `status` (0 where it cannot be read).
    pub voluntary_switches: u64,
}

/// The threads of process `pid` (`self` for this one) now; empty where `/proc` cannot
/// tell, and a thread that ends while it is read is left out.
pub fn read_tasks(pid: &str) -> Vec<TaskStat> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let (Ok(comm), Some((cpu_ns, wait_ns))) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| parse_schedstat(&s)),
        ) else {
            continue;
        };
        let voluntary_switches = std::fs::read_to_string(path.join("status"))
            .ok()
            .and_then(|s| parse_voluntary_switches(&s))
            .unwrap_or(0);
        out.push(TaskStat {
            tid,
            name: comm.trim().to_string(),
            cpu_ns,
            wait_ns,
            voluntary_switches,
        });
    }
    out
}

/// The threads of this process now (empty where `/proc` cannot tell).
pub fn snapshot() -> Snapshot {
    Snapshot(read_tasks("self"))
}

/// What each thread of `after` used since `before`, thread by thread (by id): a thread
/// started in between counts from zero; one that ended in between is missing from `after`
/// and left out (pools that retire idle threads lose a little).
pub fn used_between(before: &[TaskStat], after: &[TaskStat]) -> Vec<TaskStat> {
    let earlier: HashMap<u32, &TaskStat> = before.iter().map(|t| (t.tid, t)).collect();
    after
        .iter()
        .map(|b| {
            let (cpu, wait, switches) = earlier
                .get(&b.tid)
                .map_or((0, 0, 0), |a| (a.cpu_ns, a.wait_ns, a.voluntary_switches));
            TaskStat {
                tid: b.tid,
                name: b.name.clone(),
                cpu_ns: b.cpu_ns.saturating_sub(cpu),
                wait_ns: b.wait_ns.saturating_sub(wait),
                voluntary_switches: b.voluntary_switches.saturating_sub(switches),
            }
        })
        .collect()
}

/// `voluntary_ctxt_switches:` of a `status` file.
pub fn parse_voluntary_switches(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `cpu_ns wait_ns slices`.
pub fn parse_schedstat(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(cpu)), Some(Ok(wait))) => Some((cpu, wait)),
        _ => None,
    }
}

/// CPU and run-queue wait per role between two snapshots, nanoseconds
/// ([`used_between`]; threads of no role are not counted).
pub fn between(before: &Snapshot, after: &Snapshot) -> [(u64, u64); 3] {
    let mut out = [(0, 0); 3];
    for t in used_between(&before.0, &after.0) {
        if let Some(r) = role(&t.name) {
            out[r].0 += t.cpu_ns;
            out[r].1 += t.wait_ns;
        }
    }
    out
}

/// The 1-minute load average (0 where `/proc` cannot tell).
pub fn load_1m() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_schedstat() {
        assert_eq!(role("ws-server"), Some(0));
        assert_eq!(role("ws-clients"), Some(1));
        assert_eq!(role("bourse-engine"), Some(2));
        assert_eq!(role("ws_bench"), None);
        assert_eq!(parse_schedstat("123 456 7\n"), Some((123, 456)));
        assert_eq!(parse_schedstat("123\n"), None);
        let status =
            "Name:\tbourse\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_voluntary_switches(status), Some(42));
        assert_eq!(parse_voluntary_switches("Name: x\n"), None);
    }

    #[test]
    fn a_busy_thread_shows_its_cpu() {
        let before = snapshot();
        let t = std::thread::Builder::new()
            .name("bourse-test".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(50) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let after = snapshot();
                (x, after)
            })
            .expect("spawn");
        let (_, after) = t.join().expect("join");
        let [_, _, (cpu, _)] = between(&before, &after);
        if std::path::Path::new("/proc/self/task").exists() {
            assert!(cpu >= 10_000_000, "{cpu} ns");
        }
    }
}
