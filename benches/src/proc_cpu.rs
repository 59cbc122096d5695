//! CPU time of a process's threads, grouped by thread name, from Linux's
//! `/proc/PID/task/*/schedstat` (nanoseconds on a CPU, nanoseconds runnable but waiting for
//! one) and the count of voluntary context switches from `/proc/PID/task/*/status`, as
//! [`feed::bench::threads::read_tasks`] reads them (the reader the WebSocket bench uses).
//!
//! Why: on a small shared machine the throughput of a closed-loop run moves ±15 % from run
//! to run, while the CPU a request costs the server (and the load generator) is steady.
//! `bourse bench http --server-pid PID` reports it per phase, so that a change to the
//! request path can be judged by microseconds of CPU per request, thread by thread.

use std::collections::BTreeMap;

use feed::bench::threads::{TaskStat, read_tasks, used_between};

/// Per thread group (the thread name without trailing digits or `-N` suffixes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCpu {
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub switches: u64,
}

/// The threads of one process at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadsSnapshot(pub Vec<TaskStat>);

/// What the threads used over an interval, by group name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuSnapshot(pub BTreeMap<String, ThreadCpu>);

/// What a thread counts under: `tokio-runtime-worker` and `bourse-engine` stay as they are;
/// numbered threads (`worker-3`, `pool7`) are counted together.
pub fn group_name(comm: &str) -> String {
    comm.trim()
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .trim_end_matches(['-', '_', '#'])
        .to_string()
}

/// Reads `/proc/<pid>/task` (`pid` may be `self`); empty where `/proc` cannot tell.
pub fn snapshot(pid: &str) -> ThreadsSnapshot {
    ThreadsSnapshot(read_tasks(pid))
}

impl ThreadsSnapshot {
    /// What each group used from `self` to `later`, thread by thread
    /// ([`used_between`]: a thread started in between counts from zero, one that ended in
    /// between is not counted, so pools that retire idle threads, like tokio's blocking
    /// pool, lose a little).
    pub fn until(&self, later: &ThreadsSnapshot) -> CpuSnapshot {
        let mut out: BTreeMap<String, ThreadCpu> = BTreeMap::new();
        for t in used_between(&self.0, &later.0) {
            let g = out.entry(group_name(&t.name)).or_default();
            g.cpu_ns += t.cpu_ns;
            g.wait_ns += t.wait_ns;
            g.switches += t.voluntary_switches;
        }
        CpuSnapshot(out)
    }
}

impl CpuSnapshot {
    pub fn total(&self) -> ThreadCpu {
        self.0
            .values()
            .fold(ThreadCpu::default(), |a, t| ThreadCpu {
                cpu_ns: a.cpu_ns + t.cpu_ns,
                wait_ns: a.wait_ns + t.wait_ns,
                switches: a.switches + t.switches,
            })
    }
}

/// CPU used over a phase, per request: `(total ns per request, [(group, ns per request)])`
/// with the groups that used at least 1 % of the total, largest first.
pub fn per_request(used: &CpuSnapshot, requests: u64) -> (u64, Vec<(String, u64)>) {
    let n = requests.max(1);
    let total = used.total().cpu_ns;
    let mut groups: Vec<(String, u64)> = used
        .0
        .iter()
        .filter(|(_, t)| t.cpu_ns.saturating_mul(100) >= total)
        .map(|(name, t)| (name.clone(), t.cpu_ns / n))
        .collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (total / n, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_group_numbered_threads() {
        assert_eq!(group_name("tokio-runtime-w\n"), "tokio-runtime-w");
        assert_eq!(group_name("worker-12"), "worker");
        assert_eq!(group_name("pool7"), "pool");
        assert_eq!(group_name("bourse-engine"), "bourse-engine");
    }

    #[test]
    fn differences_and_shares() {
        let t = |c, w, s| ThreadCpu {
            cpu_ns: c,
            wait_ns: w,
            switches: s,
        };
        let th = |tid: u32, name: &str, t: ThreadCpu| TaskStat {
            tid,
            name: name.to_string(),
            cpu_ns: t.cpu_ns,
            wait_ns: t.wait_ns,
            voluntary_switches: t.switches,
        };
        let a = ThreadsSnapshot(vec![
            th(1, "io", t(1_000, 10, 1)),
            th(2, "web", t(5_000, 20, 2)),
            th(3, "web", t(2_000, 0, 1)),
            th(4, "web", t(7_000, 0, 0)),
        ]);
        // Thread 4 ended (a pool retired it); thread 5 is new, in an existing group, and
        // thread 6 in a new one: per thread, not per group sum, so nothing goes negative.
        let b = ThreadsSnapshot(vec![
            th(1, "io", t(3_000, 15, 4)),
            th(2, "web", t(25_000, 20, 6)),
            th(3, "web", t(12_000, 0, 3)),
            th(5, "web", t(10_000, 0, 4)),
            th(6, "new", t(100, 0, 0)),
        ]);
        let d = a.until(&b);
        assert_eq!(d.0["io"], t(2_000, 5, 3));
        assert_eq!(d.0["web"], t(40_000, 0, 10));
        assert_eq!(d.total(), t(42_100, 5, 13));
        // 10 requests: 4,210 ns each; "new" is under 1 % and left out.
        let (total, groups) = per_request(&d, 10);
        assert_eq!(total, 4_210);
        assert_eq!(
            groups,
            vec![("web".to_string(), 4_000), ("io".to_string(), 200)]
        );
    }

    #[test]
    fn this_process_is_visible() {
        let before = snapshot("self");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = before.until(&snapshot("self"));
        if cfg!(target_os = "linux") {
            assert!(used.total().cpu_ns > 0, "{used:?}");
        }
    }
}
