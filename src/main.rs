//! Dispatch only: invoked as `check`, `in` or `out` (argv[0], as Concourse
//! runs `/opt/resource/check`), or as `registry-image check|in|out` for local use.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use registry_image::concourse::{self, CheckRequest, InRequest, OutRequest};
use registry_image::{check, get, logging, put};

#[derive(Parser)]
#[command(
    name = "registry-image",
    version,
    about = "Concourse CI resource for OCI/Docker registries",
    long_about = "Concourse CI resource for OCI/Docker registries.\n\n\
        Concourse runs this binary as /opt/resource/check, /opt/resource/in and \
        /opt/resource/out (links to one binary; the name picks the step). For local \
        use, name the step as a subcommand. Every step reads its request, \
        {\"source\": …, \"version\": …, \"params\": …}, as JSON on stdin, prints its \
        JSON answer on stdout, logs on stderr, and exits non-zero with one error line \
        when anything is wrong."
)]
struct Cli {
    #[command(subcommand)]
    step: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the versions (tag + digest) of an image, oldest first.
    /// stdin: {"source": {...}, "version": {...} | null}
    Check,
    /// Fetch one version into DIR (rootfs/, image.tar or oci/, plus digest, tag, repository).
    /// stdin: {"source": {...}, "version": {...}, "params": {...}}
    In {
        /// The destination directory (must exist).
        dir: Option<PathBuf>,
    },
    /// Push an image from DIR (docker-save tarball, OCI layout or layout tarball).
    /// stdin: {"source": {...}, "params": {...}}
    Out {
        /// The build's working directory that `params.image` is relative to.
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str());
    let dir = || args.get(1).map(PathBuf::from);
    let command = match invoked_as {
        Some("check") => Command::Check,
        Some("in") => Command::In { dir: dir() },
        Some("out") => Command::Out { dir: dir() },
        _ => Cli::parse().step,
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole cause chain, never a multi-line dump.
            let message = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the request from stdin")?;
    // One thread drives all network I/O (a check is I/O-bound and fans out
    // concurrently on it); CPU-heavy work goes to blocking threads. Worker
    // threads would cost more CPU to start than a tag-mode check needs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match command {
        Command::Check => {
            let request: CheckRequest = concourse::parse_request(&input)?;
            logging::init(request.source.debug);
            let versions = runtime.block_on(check::run(request))?;
            concourse::write_response(&versions)
        }
        Command::In { dir } => {
            let request: InRequest = concourse::parse_request(&input)?;
            logging::init(request.source.debug);
            let dest = dir.context("destination path not specified")?;
            let response = runtime.block_on(get::run(request, &dest))?;
            concourse::write_response(&response)
        }
        Command::Out { dir } => {
            let request: OutRequest = concourse::parse_request(&input)?;
            logging::init(request.source.debug);
            let src = dir.context("destination path not specified")?;
            let response = runtime.block_on(put::run(request, &src))?;
            concourse::write_response(&response)
        }
    }
}
