//! Running a program and measuring it: wall time, CPU time and peak RSS of
//! that one child (wait4), and medians of alternating runs.

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

/// Runs `command` with `stdin`, waiting with wait4 to get its own rusage.
// The child is reaped by wait4, which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run(mut command: Command, stdin: &[u8]) -> Measurement {
    command
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
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's and has not been waited for.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let wall = started.elapsed();
    writer.join().unwrap();
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    Measurement {
        wall,
        cpu,
        max_rss_kib: usage.ru_maxrss as u64,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
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
