//! What the two command-line tools, `tessera` and `tessera-rt`, share besides the runtime: the
//! start of `main` (command line with the `--max-memory` flag) and the one-line error format. Both print `error: MESSAGE` on standard error and exit with 1 on a
//! failed command (2 on a usage error, from clap).

/// The error and its causes, outermost first, on one line. A cause whose text the line already
/// holds is skipped: library errors often print their source in their own message.
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(err);
    while let Some(err) = cause {
        let text = err.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = err.source();
    }
    clip_line(&line.replace('\n', " "))
}

/// Prints `error: MESSAGE` on standard error in one `write`: standard error is unbuffered, so
/// `eprintln!` would write the prefix, the message and the newline separately, and the lines of
/// the ranks of one `mpirun` job (which share the launcher's standard error) would interleave
/// mid-line. A line under the pipe's atomic size (4096 bytes; lines are clipped to 1000) stays whole.
pub fn print_error(err: &(dyn std::error::Error + 'static)) {
    use std::io::Write;
    let line = format!("error: {}\n", error_line(err));
    // Nothing better can be done when standard error itself is gone.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The most bytes of one error line: a message that quotes a huge piece of input (a 10 MB
/// garbage line, a megabyte-long name) keeps its start and its end, not the middle.
const MAX_ERROR_LINE: usize = 1000;

fn clip_line(line: &str) -> String {
    if line.len() <= MAX_ERROR_LINE {
        return line.to_string();
    }
    let mut head = 600;
    while !line.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = line.len() - 200;
    while !line.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{} [... {} bytes omitted ...] {}", &line[..head], tail - head, &line[tail..])
}

// Both binaries' command line: the global budget flags and the binary's own subcommands. (A
// plain comment: a doc comment would become the `about` text of both binaries.)
#[derive(clap::Parser)]
struct CommandLine<C: clap::Subcommand> {
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(subcommand)]
    command: C,
}

/// The start of both binaries' `main`: restores SIGPIPE, parses the command line of the binary
/// `name` (`version` and `about` for `--version` and `--help`), sets the memory budget, and
/// returns the subcommand. Usage errors exit as clap's do (code 2).
pub fn start<C: clap::Subcommand>(name: &'static str, version: &'static str, about: &'static str) -> C {
    use clap::{CommandFactory, FromArgMatches};
    reset_sigpipe();
    let matches = CommandLine::<C>::command().name(name).version(version).about(about).get_matches();
    let cli = CommandLine::<C>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.budget.apply();
    cli.command
}

/// The global `--max-memory` flag of both binaries: the budget ([`tessera_ir::budget`]) that
/// data whose size comes from the input is checked against.
#[derive(clap::Args)]
pub struct BudgetArgs {
    /// Memory limit for data whose size comes from the input (tensors of a run, `.npy` files,
    /// random inputs), e.g. `8G` or `512M`; a larger one is refused with its name and size.
    /// Default: the machine's memory (MemTotal in /proc/meminfo).
    #[arg(long, global = true, value_name = "SIZE", value_parser = tessera_ir::budget::parse_size)]
    pub max_memory: Option<u64>,
}

impl BudgetArgs {
    /// Sets the process-wide budget when the flag was given.
    pub fn apply(&self) {
        if let Some(bytes) = self.max_memory {
            tessera_ir::budget::set_max_memory(bytes);
        }
    }
}

/// Restores the default SIGPIPE action, so `tessera ... | head` ends quietly like other Unix
/// tools instead of panicking on a closed stdout (Rust ignores SIGPIPE by default).
pub fn reset_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer {
        text: &'static str,
        source: Option<Box<Layer>>,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.text)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
        }
    }

    fn chain(texts: &[&'static str]) -> Layer {
        let (first, rest) = texts.split_first().expect("one layer at least");
        Layer { text: first, source: (!rest.is_empty()).then(|| Box::new(chain(rest))) }
    }

    #[test]
    fn causes_join_on_one_line_without_repeats() {
        assert_eq!(error_line(&chain(&["--input x=a.npy", "a.npy: not found"])), "--input x=a.npy: a.npy: not found");
        // A cause that the outer message already quotes is not repeated.
        assert_eq!(error_line(&chain(&["cannot read: disk full", "disk full"])), "cannot read: disk full");
        assert_eq!(error_line(&chain(&["two\nlines"])), "two lines");
    }

    #[test]
    fn huge_lines_keep_their_start_and_end() {
        let huge = format!("start {} end", "x".repeat(10_000_000));
        let line = error_line(&chain(&[Box::leak(huge.into_boxed_str())]));
        assert!(line.len() < 900, "{}", line.len());
        assert!(line.starts_with("start xxx") && line.ends_with("xxx end"), "{line}");
        assert!(line.contains("bytes omitted"), "{line}");
    }
}
