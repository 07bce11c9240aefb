//! Live progress of a running step: a spinner per step on a terminal (indicatif), one log line
//! per step every few seconds otherwise. Fed by the controller about once a second and on each
//! agent message, never from a load loop.

use std::time::{Duration, Instant};

use bandsync_common::report::group;
use tracing::info;

/// A running step's totals over its agents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepProgress {
    pub ops: u64,
    pub errors: u64,
    pub agents_done: usize,
    pub agents: usize,
    pub agents_lost: usize,
    /// Since the step's scheduled start.
    pub elapsed: Duration,
}

impl StepProgress {
    /// `ops 12,345 (4,321/s) · errors 0 · agents 1/2 done`
    pub fn message(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let mut m = format!(
            "ops {} ({}/s) · errors {} · agents {}/{} done",
            group(self.ops as f64),
            group(self.ops as f64 / secs),
            group(self.errors as f64),
            self.agents_done,
            self.agents
        );
        if self.agents_lost > 0 {
            m.push_str(&format!(" · {} lost", self.agents_lost));
        }
        m
    }
}

/// Where live progress goes.
pub trait ProgressSink: Send + Sync {
    fn start(&mut self, step: &str, kind: &str);
    fn update(&mut self, step: &str, p: &StepProgress);
    fn finish(&mut self, step: &str, p: &StepProgress, ok: bool);
}

/// How the binary shows progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// One log line per step every few seconds (no terminal, or logs for machines).
    #[default]
    Log,
    /// A live spinner per step on stderr (a terminal).
    Bar,
}

impl ProgressMode {
    pub fn sink(self) -> Box<dyn ProgressSink> {
        match self {
            ProgressMode::Log => Box::new(LogSink {
                every: Duration::from_secs(5),
                last: None,
            }),
            ProgressMode::Bar => Box::new(BarSink { bar: None }),
        }
    }
}

struct LogSink {
    every: Duration,
    last: Option<Instant>,
}

impl ProgressSink for LogSink {
    fn start(&mut self, _step: &str, _kind: &str) {
        self.last = Some(Instant::now());
    }
    fn update(&mut self, step: &str, p: &StepProgress) {
        if self.last.is_some_and(|t| t.elapsed() >= self.every) {
            self.last = Some(Instant::now());
            info!(step = %step, ops = p.ops, errors = p.errors, done = p.agents_done, of = p.agents, "progress: {}", p.message());
        }
    }
    fn finish(&mut self, step: &str, p: &StepProgress, ok: bool) {
        info!(step = %step, ok, "step finished: {}", p.message());
    }
}

struct BarSink {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressSink for BarSink {
    fn start(&mut self, step: &str, kind: &str) {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} [{elapsed}] {msg}")
                .expect("a valid template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓"),
        );
        bar.set_prefix(format!("{step} ({kind})"));
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bar = Some(bar);
    }
    fn update(&mut self, _step: &str, p: &StepProgress) {
        if let Some(bar) = &self.bar {
            bar.set_message(p.message());
        }
    }
    fn finish(&mut self, _step: &str, p: &StepProgress, ok: bool) {
        if let Some(bar) = self.bar.take() {
            let mark = if ok { "done" } else { "FAILED" };
            bar.finish_with_message(format!("{mark} · {}", p.message()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_what_is_going_on() {
        let p = StepProgress {
            ops: 12_345,
            errors: 2,
            agents_done: 1,
            agents: 2,
            agents_lost: 0,
            elapsed: Duration::from_secs(5),
        };
        assert_eq!(p.message(), "ops 12,345 (2,469/s) · errors 2 · agents 1/2 done");
        let lost = StepProgress { agents_lost: 1, ..p };
        assert!(lost.message().ends_with("· 1 lost"));
    }
}
