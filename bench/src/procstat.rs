//! CPU time and peak memory of processes, read from `/proc` (Linux only, like the deployment).

use std::time::Instant;

use procfs::process::Process;

/// CPU seconds (user + system) a process has used so far; with `children`, also what its
/// exited, waited-for children used and what its live children use (PostgreSQL's backends).
pub fn cpu_seconds(pid: i32, children: bool) -> anyhow::Result<f64> {
    let tps = procfs::ticks_per_second() as f64;
    let stat = Process::new(pid)?.stat()?;
    let mut ticks = stat.utime + stat.stime;
    if children {
        ticks += (stat.cutime + stat.cstime).max(0) as u64;
        for p in procfs::process::all_processes()?.flatten() {
            if let Ok(s) = p.stat() {
                if s.ppid == pid {
                    ticks += s.utime + s.stime;
                }
            }
        }
    }
    Ok(ticks as f64 / tps)
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss(pid: i32) -> anyhow::Result<u64> {
    let status = Process::new(pid)?.status()?;
    Ok(status.vmhwm.unwrap_or(0) * 1024)
}

/// Resident set size now (VmRSS) in bytes.
pub fn rss(pid: i32) -> anyhow::Result<u64> {
    let status = Process::new(pid)?.status()?;
    Ok(status.vmrss.unwrap_or(0) * 1024)
}

/// CPU use of one process over a window, as a share of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    pid: i32,
    children: bool,
    start_cpu: f64,
    start: Instant,
}

impl CpuWindow {
    pub fn start(pid: i32, children: bool) -> anyhow::Result<CpuWindow> {
        Ok(CpuWindow {
            pid,
            children,
            start_cpu: cpu_seconds(pid, children)?,
            start: Instant::now(),
        })
    }

    /// Percent of one core since `start`.
    pub fn percent(&self) -> anyhow::Result<f64> {
        Ok(100.0 * self.seconds()? / self.elapsed().max(1e-9))
    }

    /// Seconds since `start`.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// CPU seconds used since `start`.
    pub fn seconds(&self) -> anyhow::Result<f64> {
        Ok(cpu_seconds(self.pid, self.children)? - self.start_cpu)
    }
}

/// Percentiles of a sample (nearest rank), `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn own_process_is_measured() {
        let pid = std::process::id() as i32;
        let w = CpuWindow::start(pid, false).expect("stat");
        let start = cpu_seconds(pid, false).expect("stat");
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        // Spin until the kernel has charged at least two ticks to this process.
        while cpu_seconds(pid, false).expect("stat") < start + 0.02 {
            assert!(Instant::now() < deadline, "CPU time never advanced");
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        assert!(x != 1);
        assert!(w.percent().expect("stat") > 0.0);
        assert!(peak_rss(pid).expect("status") > 1024 * 1024);
    }
}
