//! A digest that keeps failing pauses itself instead of burning through the list.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The last `window` attempts of each digest; when more than `threshold` of a full window
/// failed (permanently, or at the connection level), the digest should pause.
pub struct AutoPause {
    threshold: f64,
    window: usize,
    digests: Mutex<HashMap<String, Window>>,
}

#[derive(Default)]
struct Window {
    attempts: VecDeque<bool>,
    failures: usize,
}

impl AutoPause {
    pub fn new(threshold: f64, window: usize) -> Self {
        Self {
            threshold,
            window: window.max(1),
            digests: Mutex::new(HashMap::new()),
        }
    }

    /// Records one attempt. Returns the reason to pause when this attempt tips the digest
    /// over the threshold; the window then starts afresh (so a resumed digest gets a new one).
    pub fn record(&self, digest_id: &str, failed: bool) -> Option<String> {
        let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        let w = digests.entry(digest_id.to_owned()).or_default();
        w.attempts.push_back(failed);
        w.failures += usize::from(failed);
        if w.attempts.len() > self.window && w.attempts.pop_front() == Some(true) {
            w.failures -= 1;
        }
        let full = w.attempts.len() == self.window;
        let share = w.failures as f64 / w.attempts.len() as f64;
        if full && share > self.threshold {
            let reason = format!(
                "paused automatically: {} of the last {} attempts failed (threshold {:.0}%)",
                w.failures,
                self.window,
                self.threshold * 100.0
            );
            digests.remove(digest_id);
            return Some(reason);
        }
        if digests.len() > 1000 {
            // Finished digests are never removed otherwise; start over rather than grow.
            digests.clear();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_on_a_full_window_over_the_threshold() {
        let p = AutoPause::new(0.2, 10);
        for _ in 0..5 {
            assert_eq!(p.record("d", true), None, "window not full yet");
        }
        for _ in 0..4 {
            assert_eq!(p.record("d", false), None);
        }
        let reason = p.record("d", false).expect("5 of 10 failed");
        assert!(reason.contains("5 of the last 10"));
        // Afterwards the window starts again.
        assert_eq!(p.record("d", true), None);
    }

    #[test]
    fn a_healthy_digest_never_trips() {
        let p = AutoPause::new(0.2, 10);
        for i in 0..100 {
            assert_eq!(p.record("d", i % 10 == 0), None, "10% failures");
        }
        assert_eq!(p.record("other", true), None);
    }
}
