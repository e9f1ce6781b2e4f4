//! A loopback HTTP listener that counts connections: the URL a hostile daticert.xml points its
//! external DTD and entities at (DC-05; digest §6.2, §14.7). A reader that fetches anything shows
//! up here; every connection is answered `404` at once, so a fetching gestore is not left hanging.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The listener, alive until dropped.
pub struct FetchProbe {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FetchProbe {
    /// Opens the listener on 127.0.0.1 (a free port).
    pub async fn start() -> std::io::Result<FetchProbe> {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = l.local_addr()?;
        let count = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (count.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, peer)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                        .await
                        .ok()
                        .and_then(|x| x.ok())
                        .unwrap_or(0);
                    let line = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if let Ok(mut v) = r.lock() {
                        v.push(format!("{peer}: {line}"));
                    }
                    let _ = s
                        .write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        Ok(FetchProbe {
            addr,
            count,
            requests,
            task,
        })
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The first line of each request read so far, with the peer.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for FetchProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_counted_and_answered() {
        let p = FetchProbe::start().await.unwrap();
        assert_eq!(p.connections(), 0);
        let url = p.url("/daticert.dtd");
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /daticert.dtd HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.0 404"), "{answer}");
        assert_eq!(p.connections(), 1);
        assert!(p.requests()[0].ends_with("GET /daticert.dtd HTTP/1.0"));
    }
}
