//! Running a program and measuring it: wall time, CPU time and peak RSS of
//! that one process, and medians of alternating runs.
//!
//! Linux carries a parent's RSS high-water mark into a child's `maxrss` at
//! exec, and the benchmark process holds whole test images in memory. So a
//! command is measured through a fresh, small copy of this binary
//! (`__measure` mode) that spawns it and reports its wait4 usage.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Measurement {
    pub wall: Duration,
    pub cpu: Duration,
    pub max_rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

const MARK: &str = "__rusage ";

/// Runs `program args` with only `envs` (plus PATH) and `stdin`.
pub fn run(
    program: &std::path::Path,
    args: &[OsString],
    envs: &[(&str, String)],
    stdin: &[u8],
) -> Measurement {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .arg("__measure")
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Cold runs unless the bench names `check`'s cache directory.
        .env("REGISTRY_IMAGE_CACHE_DIR", "")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    let wall = started.elapsed();
    writer.join().unwrap();
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with(MARK))
        .unwrap_or("__rusage 1 0 0")
        .to_owned();
    let numbers: Vec<u64> = line[MARK.len()..]
        .split(' ')
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    Measurement {
        wall,
        cpu: Duration::from_micros(numbers[1]),
        max_rss_kib: numbers[2],
        stdout: reader.join().unwrap(),
        stderr: stderr.replace(&format!("{line}\n"), ""),
        success: status.success() && numbers[0] == 0,
    }
}

/// The `__measure PROGRAM ARGS…` mode: run the program with inherited stdio,
/// then print `__rusage <exit> <cpu µs> <maxrss KiB>` on stderr.
pub fn measure_mode(args: &[String]) -> ! {
    let child = Command::new(&args[0])
        .args(&args[1..])
        .spawn()
        .expect("spawn");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own child's and has not been reaped.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128
    };
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    eprintln!("{MARK}{exit} {} {}", cpu.as_micros(), usage.ru_maxrss);
    std::process::exit(0)
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

pub fn median_u64(mut values: Vec<u64>) -> u64 {
    values.sort();
    values[values.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs our `/opt/resource/<step> DIR` with `request`; it must succeed.
/// `REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES` is passed on when set (to try other
/// chunk sizes).
pub fn resource_step(
    step: &str,
    dir: &std::path::Path,
    request: &serde_json::Value,
) -> Measurement {
    let envs: Vec<(&str, String)> = std::env::var("REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES")
        .map(|v| vec![("REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES", v)])
        .unwrap_or_default();
    let m = run(
        &super::support::resource_dir().join(step),
        &[dir.into()],
        &envs,
        request.to_string().as_bytes(),
    );
    assert!(m.success, "{step} failed: {}", m.stderr);
    m
}

/// `skopeo ARGS` with its blob-info cache on a private tmpfs, so it cannot
/// turn a fresh push into mounts from what earlier runs pushed.
pub fn skopeo(args: &str) -> Measurement {
    let script = format!("mount -t tmpfs tmpfs /var/lib/containers/cache && exec skopeo {args}");
    let args: Vec<OsString> = vec!["-m".into(), "sh".into(), "-c".into(), script.into()];
    run(std::path::Path::new("/usr/bin/unshare"), &args, &[], b"")
}

/// The unpack floor: each layer of `repo` fetched by curl, inflated by
/// `inflate` (`gzip -dc`: one stage; `pigz -dc`: a second core) and
/// extracted by GNU tar into `dest` (removed afterwards).
pub fn tar_pipeline(
    host: &str,
    repo: &str,
    layers: &[String],
    inflate: &str,
    dest: &std::path::Path,
) -> Measurement {
    std::fs::create_dir_all(dest).unwrap();
    let script = layers
        .iter()
        .map(|d| {
            format!(
                "curl -sf http://{host}/v2/{repo}/blobs/{d} | {inflate} | tar -x -C {}",
                dest.display()
            )
        })
        .collect::<Vec<_>>()
        .join(" && ");
    let m = run(
        std::path::Path::new("/bin/sh"),
        &["-c".into(), script.into()],
        &[],
        b"",
    );
    assert!(m.success, "{inflate} pipeline: {}", m.stderr);
    let _ = std::fs::remove_dir_all(dest);
    m
}

/// The peer of `in`: `skopeo copy` to an OCI layout, then `umoci raw
/// unpack`, under `work` (removed afterwards); both measurements.
pub fn skopeo_umoci(
    host: &str,
    reference: &str,
    work: &std::path::Path,
) -> (Measurement, Measurement) {
    std::fs::create_dir_all(work).unwrap();
    let layout = work.join("layout");
    let copy: Vec<OsString> = vec![
        "copy".into(),
        "--quiet".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{host}/{reference}").into(),
        format!("oci:{}:latest", layout.display()).into(),
    ];
    let a = run(std::path::Path::new("/usr/bin/skopeo"), &copy, &[], b"");
    assert!(a.success, "skopeo: {}", a.stderr);
    let unpack: Vec<OsString> = vec![
        "raw".into(),
        "unpack".into(),
        "--image".into(),
        format!("{}:latest", layout.display()).into(),
        work.join("rootfs").into(),
    ];
    let b = run(std::path::Path::new("/usr/bin/umoci"), &unpack, &[], b"");
    assert!(b.success, "umoci: {}", b.stderr);
    let _ = std::fs::remove_dir_all(work);
    (a, b)
}

/// `in` of `repo@digest` (gzip `layers`) to a rootfs under `work`, against
/// the `curl | gzip -dc | tar -x` and `curl | pigz -dc | tar -x` floors and
/// skopeo copy + umoci raw unpack, alternating, `runs` times; prints the
/// medians, ratios, peak RSS and our CPU use.
pub fn compare_unpack(
    host: &str,
    repo: &str,
    digest: &str,
    layers: &[String],
    work: &std::path::Path,
    runs: usize,
) -> Duration {
    let request = serde_json::json!({"source": {"repository": format!("{host}/{repo}")},
                                     "version": {"tag": "latest", "digest": digest}});
    let (mut ours, mut gnu, mut pigz, mut peer) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let dest = work.join("ours");
        std::fs::create_dir_all(&dest).unwrap();
        ours.push(resource_step("in", &dest, &request));
        std::fs::remove_dir_all(&dest).unwrap();
        gnu.push(tar_pipeline(
            host,
            repo,
            layers,
            "gzip -dc",
            &work.join("gnu"),
        ));
        pigz.push(tar_pipeline(
            host,
            repo,
            layers,
            "pigz -dc",
            &work.join("pigz"),
        ));
        peer.push(skopeo_umoci(
            host,
            &format!("{repo}@{digest}"),
            &work.join("peer"),
        ));
    }
    let wall = |runs: &[Measurement]| median(runs.iter().map(|m| m.wall).collect());
    let rss = |runs: &[u64]| median_u64(runs.to_vec()) / 1024;
    let o = wall(&ours);
    let cpu = median(ours.iter().map(|m| m.cpu).collect());
    println!("  rootfs to tmpfs, median of {runs} alternating runs:");
    println!(
        "    ours (in)                       {}   peak RSS {} MiB   CPU {} ({:.0}% of one core)",
        ms(o),
        rss(&ours.iter().map(|m| m.max_rss_kib).collect::<Vec<_>>()),
        ms(cpu),
        100.0 * cpu.as_secs_f64() / o.as_secs_f64()
    );
    let peer_wall = median(peer.iter().map(|(a, b)| a.wall + b.wall).collect());
    let peer_rss = rss(&peer
        .iter()
        .map(|(a, b)| a.max_rss_kib.max(b.max_rss_kib))
        .collect::<Vec<_>>());
    for (label, floor, note) in [
        ("curl | gzip -dc | tar -x", wall(&gnu), String::new()),
        ("curl | pigz -dc | tar -x", wall(&pigz), String::new()),
        (
            "skopeo copy + umoci raw unpack",
            peer_wall,
            format!("   peak RSS {peer_rss} MiB"),
        ),
    ] {
        println!(
            "    {label:<31} {}   ratio ours/it {:.2}x{note}",
            ms(floor),
            o.as_secs_f64() / floor.as_secs_f64()
        );
    }
    o
}
