//! A real etcd for the tests: spawned on loopback, on free non-default
//! ports, with a fresh data directory in the temp dir; killed (and the
//! directory removed) on drop. No mock: the `etcd` binary must be on PATH
//! (Debian: `apt-get install etcd-server`), and a missing one fails the
//! test with that message.
//!
//! Shared by the tests, the example's test and the benchmark
//! (`#[path = "../tests/common/mod.rs"]`).

#![allow(dead_code)] // each user takes what it needs

pub mod proxy;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use snapmap_etcd::etcd_client::Client;

/// A running etcd process.
pub struct Etcd {
    child: Option<Child>,
    extra_args: Vec<String>,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

/// A port that is free now (the kernel's choice; a tiny race with other
/// processes until etcd binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    /// Starts a fresh etcd and waits until it answers.
    pub async fn start() -> Etcd {
        Etcd::start_with_args(&[]).await
    }

    /// [`start`](Self::start) with more command-line options.
    pub async fn start_with_args(extra_args: &[&str]) -> Etcd {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let data_dir = std::env::temp_dir().join(format!(
            "snapmap-etcd-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut etcd = Etcd {
            child: None,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            data_dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn().await;
        etcd
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A client connected to it.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None)
            .await
            .expect("connect to the test etcd")
    }

    /// SIGKILL (no clean shutdown), waited for.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data directory and ports.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--logger=zap")
            .arg("--log-level=error")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `etcd` ({e}): these tests need a real etcd on PATH \
                     (Debian: apt-get install etcd-server)"
                )
            });
        self.child = Some(child);
        self.wait_healthy().await;
    }

    /// Waits (up to 30 s) until a range get succeeds.
    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd exited at start: {status}");
                }
            }
            let attempt = async {
                let mut client = Client::connect([self.endpoint()], None).await?;
                client.get("health-probe", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
