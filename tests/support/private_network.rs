//! Runs a test again inside a private user, network and mount namespace:
//! a loopback device (up, with any extra addresses the test asks for), no
//! route out, and `/etc/hosts` bound over with the names the test gives.
//! Inside, the whole harness works as usual (registries, token services,
//! the steps), so a test can serve real names (Docker Hub's) or a real
//! non-loopback address on port 443 and know that no packet leaves.

use std::process::Command;

/// Set in the environment of the run inside.
const INSIDE: &str = "REGISTRY_IMAGE_TEST_PRIVATE_NETWORK";

/// Whether this run is the one inside the namespace.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Runs the test `name` of the current test binary inside a private
/// network where each `(address, name)` of `hosts` resolves and each of
/// `addresses` is on the loopback device; fails with its output when the
/// test fails there (or did not run).
pub fn run_test_inside(name: &str, hosts: &[(&str, &str)], addresses: &[&str]) {
    let hosts_file = tempfile::NamedTempFile::new().unwrap();
    let mut lines = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (address, host) in hosts {
        lines.push_str(&format!("{address} {host}\n"));
    }
    std::fs::write(hosts_file.path(), lines).unwrap();
    let mut script = String::from("set -eu\nip link set lo up\n");
    for address in addresses {
        script.push_str(&format!("ip addr add {address}/32 dev lo\n"));
    }
    script.push_str("mount --bind \"$0\" /etc/hosts\nexec \"$@\"\n");
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "--"])
        .args(["sh", "-c", &script])
        .arg(hosts_file.path())
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("unshare (util-linux) and ip (iproute2) are installed: run scripts/setup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "inside the private network:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "the test did not run inside:\n{text}"
    );
}

/// Asserts that nothing leaves the namespace: no route to a documentation
/// address (v4 or v6), and `index.docker.io` resolves nowhere.
pub fn assert_no_route_out() {
    let timeout = std::time::Duration::from_secs(2);
    for address in ["192.0.2.1:443", "[2001:db8::1]:443"] {
        let reached = std::net::TcpStream::connect_timeout(&address.parse().unwrap(), timeout);
        assert!(reached.is_err(), "{address} was reachable");
    }
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&("index.docker.io", 443));
    assert!(resolved.is_err(), "index.docker.io resolved: {resolved:?}");
}
