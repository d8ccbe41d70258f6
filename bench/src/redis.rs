//! A Redis server with `appendfsync always`, and just enough of RESP to run
//! a reliable queue (LPUSH, BLMOVE, LREM). Written here rather than pulling
//! a Redis client crate into the workspace build for three commands. And
//! the two measurements made against it: a reliable queue's lifecycle
//! throughput and its enqueue-to-delivery latency.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::appliance::Reaped;
use crate::percentiles;
use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A redis-server child process; killed on drop.
pub struct Server {
    _process: Reaped,
    pub port: u16,
}

impl Server {
    /// Starts redis-server on loopback, persisting every write with fsync.
    pub async fn start(dir: &Path) -> anyhow::Result<Server> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        std::fs::create_dir_all(dir)?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server not found: install Debian's redis-server (bench/run.sh does)")?;
        let server = Server { _process: Reaped(child), port };
        for _ in 0..200 {
            if let Ok(mut c) = Conn::connect(port).await
                && c.cmd(&[b"PING"]).await.is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("redis-server did not answer PING")
    }
}

#[derive(Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One RESP connection.
pub struct Conn {
    io: BufReader<TcpStream>,
}

impl Conn {
    pub async fn connect(port: u16) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn { io: BufReader::new(tcp) })
    }

    pub async fn cmd(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.io.get_mut().write_all(&out).await?;
        self.read().await
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.io.read_line(&mut line).await?;
        Ok(line.trim_end_matches("\r\n").to_owned())
    }

    async fn read(&mut self) -> anyhow::Result<Reply> {
        let line = self.line().await?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Ok(Reply::Status(rest.to_owned())),
            "-" => bail!("redis error: {rest}"),
            ":" => Ok(Reply::Int(rest.parse()?)),
            "$" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0u8; usize::try_from(n)? + 2];
                self.io.read_exact(&mut buf).await?;
                buf.truncate(buf.len() - 2);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(Box::pin(self.read()).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => bail!("unexpected RESP line {line:?}"),
        }
    }

    /// How many clients are blocked in a blocking command right now.
    pub async fn blocked_clients(&mut self) -> anyhow::Result<u64> {
        match self.cmd(&[b"INFO", b"clients"]).await? {
            Reply::Bulk(Some(text)) => {
                let text = String::from_utf8_lossy(&text);
                let n = text
                    .lines()
                    .find_map(|l| l.strip_prefix("blocked_clients:"))
                    .context("INFO clients has no blocked_clients")?;
                Ok(n.trim().parse()?)
            }
            other => bail!("unexpected INFO reply {other:?}"),
        }
    }
}

pub async fn lifecycle(port: u16, n: usize, in_flight: usize) -> anyhow::Result<f64> {
    let mut setup = Conn::connect(port).await?;
    setup.cmd(&[b"DEL", b"queue", b"processing"]).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Notify::new());
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let mut c = Conn::connect(port).await?;
        let (done, finished) = (done.clone(), finished.clone());
        consumers.push(tokio::spawn(async move {
            loop {
                let Ok(reply) = c.cmd(&[b"BLMOVE", b"queue", b"processing", b"RIGHT", b"LEFT", b"1"]).await else {
                    return;
                };
                if let Reply::Bulk(Some(item)) = reply {
                    // Ack: the task is done, take it off the processing list.
                    if c.cmd(&[b"LREM", b"processing", b"1", &item]).await.is_ok()
                        && done.fetch_add(1, Ordering::SeqCst) + 1 == n
                    {
                        finished.notify_one();
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut producer = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let mut conn = Conn::connect(port).await?;
        let next = next.clone();
        producer.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let item = json!({"id": i, "kind": "echo", "input": {"i": i}}).to_string();
                conn.cmd(&[b"LPUSH", b"queue", item.as_bytes()]).await?;
            }
        });
    }
    while let Some(r) = producer.join_next().await {
        r??;
    }
    tokio::time::timeout(Duration::from_secs(600), finished.notified()).await.context("redis consumers stalled")?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    consumers.iter().for_each(|c| c.abort());
    Ok(rate)
}

pub async fn latency(port: u16, samples: usize) -> anyhow::Result<Value> {
    let mut producer = Conn::connect(port).await?;
    producer.cmd(&[b"DEL", b"queue", b"processing"]).await?;
    let mut consumer = Conn::connect(port).await?;
    let (tx, mut delivered) = mpsc::unbounded_channel::<Instant>();
    let task = tokio::spawn(async move {
        loop {
            let Ok(reply) = consumer.cmd(&[b"BLMOVE", b"queue", b"processing", b"RIGHT", b"LEFT", b"0"]).await else {
                return;
            };
            let at = Instant::now();
            if let Reply::Bulk(Some(item)) = reply {
                let _ = tx.send(at);
                let _ = consumer.cmd(&[b"LREM", b"processing", b"1", &item]).await;
            }
        }
    });
    let mut after_ack = Vec::with_capacity(samples);
    for i in 0..samples {
        while producer.blocked_clients().await? < 1 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let item = json!({"id": i}).to_string();
        producer.cmd(&[b"LPUSH", b"queue", item.as_bytes()]).await?;
        let acked = Instant::now();
        let got = delivered.recv().await.context("consumer stopped")?;
        after_ack.push(got.saturating_duration_since(acked));
    }
    task.abort();
    Ok(percentiles(after_ack))
}
