//! sandboxer's benchmarks: each section runs the real release binaries
//! beside the raw tool doing the same work, and writes its figures, the
//! machine and its load, and whether each target is met into its own
//! section of `docs/benchmarks.md`.
//!
//! One command runs them: `scripts/bench [SECTION...]`, which builds
//! `sandboxer` and this tool in release mode, starts the testbed where a
//! section needs docker, and runs `target/release/sandboxer-bench SECTION
//! --out docs/benchmarks.md`.
//!
//! Sections: `foundation` (canary create and destroy against `docker run`,
//! `list --json` and a create's store commit at 0 to 1,000,000 records) and
//! `operator` (the dashboard's data request and `/metrics` of a real
//! `sandboxer serve` on 100,000 records) and `e2b` (a create and kill through
//! the official E2B SDK beside `/v1` with curl).
//! A new section is a module with a `run` that returns an [`Outcome`], a
//! subcommand in `main.rs`, and a name in `scripts/bench`; the report
//! writer keeps every other section as it is:
//!
//! ```
//! let doc = sandboxer_bench::report::replace_section(
//!     "# Benchmarks\n",
//!     "compose",
//!     "## compose\n\n| what | p50 |\n|---|---|\n",
//! )
//! .unwrap();
//! assert!(doc.contains("<!-- bench:compose -->\n## compose"));
//! ```
//!
//! Timing thresholds live here, never in unit tests: a benchmark that
//! misses a target says so in the report and exits non-zero.

pub mod e2b;
pub mod foundation;
pub mod machine;
pub mod operator;
pub mod records;
pub mod report;
pub mod run;
pub use sandboxer_testkit::stats;

/// What a section's run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The section's markdown, without its markers.
    pub markdown: String,
    /// Targets not met, in words.
    pub missed: Vec<String>,
    /// Why the run must fail even though it wrote figures (a baseline
    /// skipped under CI).
    pub failures: Vec<String>,
    /// Whether every part ran (a partial run is printed, never written).
    pub complete: bool,
}
