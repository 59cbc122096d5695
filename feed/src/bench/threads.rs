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

/// Per thread id: role, CPU ns, run-queue wait ns.
#[derive(Debug, Default)]
pub struct Snapshot(HashMap<u32, (usize, u64, u64)>);

/// The threads of this process now (empty where `/proc` cannot tell).
pub fn snapshot() -> Snapshot {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Snapshot(out);
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Some(r) = role(comm.trim()) else {
            continue;
        };
        if let Some((cpu, wait)) = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| parse_schedstat(&s))
        {
            out.insert(tid, (r, cpu, wait));
        }
    }
    Snapshot(out)
}

/// `cpu_ns wait_ns slices`.
fn parse_schedstat(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(cpu)), Some(Ok(wait))) => Some((cpu, wait)),
        _ => None,
    }
}

/// CPU and run-queue wait per role between two snapshots, nanoseconds (a thread started
/// in between counts from zero, one that ended is left out).
pub fn between(before: &Snapshot, after: &Snapshot) -> [(u64, u64); 3] {
    let mut out = [(0, 0); 3];
    for (tid, &(r, cpu, wait)) in &after.0 {
        let (c0, w0) = before.0.get(tid).map_or((0, 0), |&(_, c, w)| (c, w));
        out[r].0 += cpu.saturating_sub(c0);
        out[r].1 += wait.saturating_sub(w0);
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
        assert_eq!(role("bourse-output"), Some(2));
        assert_eq!(role("ws_bench"), None);
        assert_eq!(parse_schedstat("123 456 7\n"), Some((123, 456)));
        assert_eq!(parse_schedstat("123\n"), None);
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
