//! Timing for the plain `cargo bench` harnesses (`ir/benches`, `codegen/benches`): no bench
//! dependency, one median helper so every benchmark measures the same way.

use std::time::{Duration, Instant};

/// Median wall time of `runs` calls of `f` (`runs` must be at least 1).
pub fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::median;
    use std::time::Duration;

    #[test]
    fn median_runs_f_each_time_and_picks_the_middle_time() {
        // Calls sleep 1 ms, 40 ms, 400 ms: the middle one is the median, far from both others
        // (a loaded machine oversleeps by milliseconds, not hundreds).
        let sleeps = [1u64, 40, 400];
        let mut calls = 0;
        let t = median(3, || {
            std::thread::sleep(Duration::from_millis(sleeps[calls]));
            calls += 1;
        });
        assert_eq!(calls, 3);
        assert!(t >= Duration::from_millis(40), "{t:?}");
        assert!(t < Duration::from_millis(400), "{t:?}");
    }
}
