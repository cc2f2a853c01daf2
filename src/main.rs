//! Dispatch only: invoked as `check`, `in` or `out` (argv[0], as Concourse
//! runs `/opt/resource/check`), or as `registry-image check|in|out` for local use,
//! or as `registry-image <verb>` for the crane-style command line (`cli`).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use registry_image::cli::{self, Connection};
use registry_image::concourse::{self, CheckRequest, InRequest, OutRequest};
use registry_image::source::Secret;
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
    /// List a repository's tags, one a line.
    #[command(after_help = "Example:\n  registry-image ls registry.example.org/team/app")]
    Ls {
        repository: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Print the digest a reference resolves to.
    #[command(after_help = "Example:\n  registry-image digest registry.example.org/team/app:1.2.3")]
    Digest {
        reference: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Print a manifest or index exactly as served (with --platform, that platform's image).
    #[command(
        after_help = "Example:\n  registry-image manifest registry.example.org/team/app:latest --platform linux/arm64"
    )]
    Manifest {
        reference: String,
        /// os/architecture[/variant] of the image to pick from an index.
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Print an image's config (of --platform, else this machine's, for an index).
    #[command(
        after_help = "Example:\n  registry-image config registry.example.org/team/app:latest"
    )]
    Config {
        reference: String,
        /// os/architecture[/variant] of the image to pick from an index.
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Write a blob to stdout (or a file), verified against its digest while it streams.
    #[command(
        after_help = "Example:\n  registry-image blob registry.example.org/team/app@sha256:… -o layer.tar.gz\n\nOn stdout the last buffer is held back until the digest checks out, so a\ncorrupted blob is never delivered whole. With -o the blob goes to a\ntemporary file beside FILE, renamed to FILE only once verified."
    )]
    Blob {
        reference: String,
        /// Write to FILE (only once verified) instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Copy an image or index by digest (every platform), here or to another registry.
    #[command(
        after_help = "Example:\n  registry-image cp staging.example.org/team/app:rc prod.example.org/team/app:1.2.3 --all"
    )]
    Cp {
        from: String,
        /// REPOSITORY[:TAG]; the tag defaults to the source's.
        to: String,
        /// Also copy what refers to it: signatures, attestations, SBOMs.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Check that a reference's digest carries a cosign signature: made with a key (as
    /// `cosign verify --key`, without a transparency log), or keyless by an identity through
    /// an OIDC issuer (checked offline against a Sigstore trusted root); prints the digest
    /// and where.
    #[command(
        after_help = "Example:\n  registry-image verify registry.example.org/team/app:1.2.3 --key cosign.pub\nKeyless:\n  registry-image verify registry.k8s.io/pause:3.10 \\\n    --certificate-identity krel-trust@k8s-releng-prod.iam.gserviceaccount.com \\\n    --certificate-oidc-issuer https://accounts.google.com"
    )]
    Verify {
        reference: String,
        /// The PEM public key (cosign.pub): ECDSA P-256 or Ed25519.
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        #[command(flatten)]
        keyless: cli::KeylessArgs,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Put a manifest under more tags (its digest kept).
    #[command(
        after_help = "Example:\n  registry-image tag registry.example.org/team/app:1.2.3 stable latest"
    )]
    Tag {
        reference: String,
        #[arg(required = true)]
        tags: Vec<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Delete a tag, or by digest a manifest (and every tag on it).
    #[command(
        after_help = "Example:\n  registry-image rm registry.example.org/team/app:pr-42 --manifest"
    )]
    Rm {
        reference: String,
        /// Where the registry cannot delete a tag alone, delete its manifest
        /// (which removes every tag on it).
        #[arg(long)]
        manifest: bool,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// List the repositories of a registry (if it allows the catalog).
    #[command(after_help = "Example:\n  registry-image catalog localhost:5000")]
    Catalog {
        registry: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

/// How the command line reaches a registry.
#[derive(clap::Args)]
struct ConnectionArgs {
    /// Username; else the docker config's credentials, else anonymous.
    #[arg(long)]
    username: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Plain HTTP or unverified TLS.
    #[arg(long)]
    insecure: bool,
    /// A PEM file of CA certificates to trust (repeatable).
    #[arg(long = "ca-cert")]
    ca_cert: Vec<PathBuf>,
    /// Log every request on stderr.
    #[arg(long)]
    debug: bool,
}

impl ConnectionArgs {
    fn connection(&self) -> anyhow::Result<Connection> {
        let password = if self.password_stdin {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from stdin")?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else {
            String::new()
        };
        if self.password_stdin && self.username.is_none() {
            anyhow::bail!("--password-stdin needs --username");
        }
        let mut ca_certs = Vec::new();
        for path in &self.ca_cert {
            ca_certs.push(
                std::fs::read_to_string(path)
                    .with_context(|| format!("--ca-cert {}", path.display()))?,
            );
        }
        Ok(Connection {
            username: self.username.clone().unwrap_or_default(),
            password: Secret(password),
            insecure: self.insecure,
            ca_certs,
            debug: self.debug,
        })
    }
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
    if !matches!(
        command,
        Command::Check | Command::In { .. } | Command::Out { .. }
    ) {
        return run_verb(command);
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the request from stdin")?;
    let runtime = runtime()?;
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
        _ => anyhow::bail!("internal error: a command-line verb run as a step"),
    }
}

/// One thread drives all network I/O (a check is I/O-bound and fans out
/// concurrently on it); CPU-heavy work goes to blocking threads. Worker
/// threads would cost more CPU to start than a tag-mode check needs.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The command-line verbs: output on stdout, logs (with --debug) on stderr.
fn run_verb(command: Command) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let platform = |text: &Option<String>| text.as_deref().map(cli::parse_platform).transpose();
    let connect = |args: &ConnectionArgs| -> anyhow::Result<Connection> {
        let connection = args.connection()?;
        logging::init_verb(connection.debug);
        Ok(connection)
    };
    runtime.block_on(async {
        match &command {
            Command::Ls {
                repository,
                connection,
            } => cli::ls(&connect(connection)?, repository).await,
            Command::Digest {
                reference,
                connection,
            } => cli::digest(&connect(connection)?, reference).await,
            Command::Verify {
                reference,
                key,
                keyless,
                connection,
            } => cli::verify(&connect(connection)?, reference, key.as_deref(), keyless).await,
            Command::Manifest {
                reference,
                platform: p,
                connection,
            } => cli::manifest(&connect(connection)?, reference, platform(p)?.as_ref()).await,
            Command::Config {
                reference,
                platform: p,
                connection,
            } => cli::config(&connect(connection)?, reference, platform(p)?.as_ref()).await,
            Command::Blob {
                reference,
                output,
                connection,
            } => cli::blob(&connect(connection)?, reference, output.as_deref()).await,
            Command::Cp {
                from,
                to,
                all,
                connection,
            } => cli::cp(&connect(connection)?, from, to, *all).await,
            Command::Tag {
                reference,
                tags,
                connection,
            } => cli::tag(&connect(connection)?, reference, tags).await,
            Command::Rm {
                reference,
                manifest,
                connection,
            } => cli::rm(&connect(connection)?, reference, *manifest).await,
            Command::Catalog {
                registry,
                connection,
            } => cli::catalog(&connect(connection)?, registry).await,
            Command::Check | Command::In { .. } | Command::Out { .. } => {
                anyhow::bail!("internal error: a step run as a command-line verb")
            }
        }
    })
}
