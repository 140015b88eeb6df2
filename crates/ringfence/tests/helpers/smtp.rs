//! An SMTP sink on loopback for tests: a small tokio server speaking enough SMTP for lettre
//! (greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and recording each message. It
//! can be started on a chosen port (to come up after the server first tried it) and told to
//! refuse recipients for good (550).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the sink took.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub to: Vec<String>,
    /// The message as sent (headers and body, dot-unstuffed).
    pub data: String,
}

impl Mail {
    /// A header's value (unfolded), "" when absent.
    pub fn header(&self, name: &str) -> String {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_owned());
                }
            }
        }
        value.unwrap_or_default()
    }

    /// The body, decoded from quoted-printable or base64 when the message says so.
    pub fn body(&self) -> String {
        let raw = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        match self
            .header("Content-Transfer-Encoding")
            .to_ascii_lowercase()
            .as_str()
        {
            "quoted-printable" => decode_qp(raw),
            "base64" => {
                use base64::Engine;
                let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("base64 body");
                String::from_utf8(bytes).expect("utf-8 body")
            }
            _ => raw.to_owned(),
        }
    }
}

fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Default)]
struct Inner {
    mails: Vec<Mail>,
    refuse_recipients: bool,
}

/// A running sink.
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink on a free port.
    pub async fn start() -> SmtpSink {
        SmtpSink::start_on(0).await
    }

    /// Starts a sink on `port` (0: any free one).
    pub async fn start_on(port: u16) -> SmtpSink {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind smtp sink");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(session(stream, Arc::clone(&shared)));
            }
        });
        SmtpSink { port, inner, task }
    }

    /// From now on, answer every RCPT with 550 (a permanent refusal), or accept them again.
    pub fn refuse_recipients(&self, refuse: bool) {
        self.inner.lock().expect("lock").refuse_recipients = refuse;
    }

    /// Every message so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.inner.lock().expect("lock").mails.clone()
    }

    /// Waits until at least `n` messages arrived (15 s at most).
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.mails();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "smtp sink: expected {n} mail(s), got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, inner: Arc<Mutex<Inner>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut from = String::new();
    let mut to = Vec::new();
    if write
        .write_all(b"220 sink.test ESMTP ready\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 sink.test\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&cmd[10..]);
            to.clear();
            "250 OK\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            if inner.lock().expect("lock").refuse_recipients {
                "550 5.1.1 no such mailbox here\r\n".into()
            } else {
                to.push(address(&cmd[8..]));
                "250 OK\r\n".into()
            }
        } else if upper == "DATA" {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            inner.lock().expect("lock").mails.push(Mail {
                from: from.clone(),
                to: std::mem::take(&mut to),
                data,
            });
            "250 OK queued\r\n".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else if upper == "RSET" || upper == "NOOP" {
            "250 OK\r\n".into()
        } else {
            "502 command not implemented\r\n".into()
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn address(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_owned()
}
