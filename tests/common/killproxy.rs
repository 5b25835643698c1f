//! An HTTP proxy between the coordinator and one signer that kills a process (`kill -9`)
//! when a given step of an epoch transition passes through it: the coordinator (then the
//! request still reaches the signer) or the signer (then the request is dropped). It reads
//! the signed request body only to find the step name; it never changes a byte.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Who dies when the step passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// The coordinator process (the request is still delivered).
    Coordinator,
    /// The signer behind the proxy (the request is dropped).
    Signer,
}

pub struct StepProxy {
    pub url: String,
    /// The step fired (the victim was killed).
    pub fired: Arc<AtomicBool>,
    /// The pid to kill (set once the victim runs).
    pub pid: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Drop for StepProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One HTTP message (headers and body by content-length), raw.
fn read_message(r: &mut BufReader<TcpStream>) -> Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(if raw.is_empty() { None } else { Some(raw) });
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        raw.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    raw.extend_from_slice(&body);
    Ok(Some(raw))
}

impl StepProxy {
    /// Relays to `upstream` (`127.0.0.1:PORT`); kills `victim` (the pid stored in `pid`)
    /// the first time a request for transition step `step` (e.g. `prepare`) passes.
    pub fn start(upstream: String, step: &str, victim: Victim) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let pid = Arc::new(AtomicU32::new(0));
        let needle = format!("\"transition\":{{\"{step}\"");
        let (stop2, fired2, pid2) = (stop.clone(), fired.clone(), pid.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (upstream, needle, fired, pid) = (
                            upstream.clone(),
                            needle.clone(),
                            fired2.clone(),
                            pid2.clone(),
                        );
                        std::thread::spawn(move || {
                            let _ = relay(client, &upstream, &needle, victim, &fired, &pid);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(StepProxy {
            url,
            fired,
            pid,
            stop,
        })
    }
}

fn kill(pid: u32) {
    if pid != 0 {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

fn relay(
    client: TcpStream,
    upstream: &str,
    needle: &str,
    victim: Victim,
    fired: &AtomicBool,
    pid: &AtomicU32,
) -> Result<()> {
    client.set_nonblocking(false)?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let server = TcpStream::connect(upstream).context("connecting to the signer")?;
    let mut from_server = BufReader::new(server.try_clone()?);
    let mut to_server = server;
    while let Some(request) = read_message(&mut from_client)? {
        let hit = String::from_utf8_lossy(&request).contains(needle);
        if hit && !fired.swap(true, Ordering::SeqCst) {
            kill(pid.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(100));
            if victim == Victim::Signer {
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        to_server.write_all(&request)?;
        let Some(response) = read_message(&mut from_server)? else {
            bail!("the signer closed the connection");
        };
        if to_client.write_all(&response).is_err() {
            // The coordinator is gone; the signer got the request all the same.
            return Ok(());
        }
    }
    Ok(())
}
