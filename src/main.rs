//! The `squeeze` command: parses arguments, builds the configuration, runs the command
//! (`squeeze::cli`).

use std::process::ExitCode;

use squeeze::config::{Config, LogFormat};

/// mimalloc instead of glibc's malloc: the worker allocates and frees small buffers for every
/// email, and the profile showed glibc's malloc at about 12% of its CPU; with mimalloc the
/// 4.4 KB benchmark sends ~7% more per second for ~9% less CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let (cli, flags) = squeeze::cli::parse();
    let config = match Config::load(cli.config.as_deref(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("squeeze: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("squeeze: cannot start the async runtime: {e}.");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(squeeze::cli::run(cli.command, config))
}

/// Human-readable logs by default, JSON lines with `log_format = json`; `RUST_LOG` filters.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("squeeze=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
