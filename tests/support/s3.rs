//! An S3 for the registry's `s3` storage driver, so that blob GETs answer
//! 307 with presigned URLs to another host, as Docker Hub, ECR, GAR and
//! GHCR do (shared/reference/registry-quirks.md §1.1, §2, §4).
//!
//! The S3 is moto in server mode (PyPI `moto[server]`, the AWS SDKs' own
//! test double), on a free loopback port. In front of it stands a
//! [`FaultProxy`]: that proxy is the "storage host" the registry's
//! presigned URLs name, so what reaches storage is recorded (and can be
//! cut or refused, as an expired URL is).

use std::process::{Child, Command};

use super::free_port;
use super::proxy::FaultProxy;

/// The bucket the registry stores into.
pub const BUCKET: &str = "registry";

pub struct S3Storage {
    child: Child,
    dir: tempfile::TempDir,
    /// moto's own port.
    pub moto_port: u16,
    /// The storage host, as presigned URLs name it.
    pub proxy: FaultProxy,
}

impl S3Storage {
    pub fn start() -> Self {
        super::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let moto_port = free_port();
        let child = super::spawn_logged(
            Command::new("python3")
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(moto_port.to_string()),
            &dir.path().join("moto.log"),
            "moto (scripts/setup installs it)",
        );
        let mut storage = S3Storage {
            child,
            dir,
            moto_port,
            // The storage host is a host of its own (127.0.0.2), as S3 or
            // a CDN is to a registry.
            proxy: FaultProxy::in_front_of_at(
                &format!("http://127.0.0.1:{moto_port}"),
                std::net::Ipv4Addr::new(127, 0, 0, 2),
            ),
        };
        storage.wait_ready();
        // An unsigned bucket creation: moto does not check signatures.
        let created = super::runtime().block_on(async {
            reqwest::Client::new()
                .put(format!("http://127.0.0.1:{moto_port}/{BUCKET}"))
                .send()
                .await
                .unwrap()
        });
        assert!(
            created.status().is_success(),
            "creating the bucket: {}",
            created.status()
        );
        storage
    }

    fn wait_ready(&mut self) {
        let log = self.dir.path().join("moto.log");
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.moto_port));
        super::wait_listening(&mut self.child, address, "moto", &log);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// The registry's `storage:` section for this S3 (through the proxy).
    pub fn registry_config(&self) -> String {
        format!(
            "storage:\n  s3:\n    accesskey: test-access-key\n    secretkey: test-secret-key\n    \
             region: us-east-1\n    regionendpoint: http://{}\n    bucket: {BUCKET}\n    \
             secure: false\n    v4auth: true\n    rootdirectory: /registry\n  \
             delete:\n    enabled: true\n",
            self.proxy.host()
        )
    }

    /// The presigned downloads storage served, as (method, path?query).
    pub fn presigned_gets(&self) -> Vec<(String, String)> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|(method, path)| method == "GET" && path.contains("X-Amz-Signature="))
            .collect()
    }
}

impl Drop for S3Storage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
