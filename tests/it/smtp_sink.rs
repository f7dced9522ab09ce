//! A small SMTP server on loopback for the email tests: it speaks enough of
//! RFC 5321 for lettre over plain TCP, hands every accepted mail back
//! through a channel, and answers scripted commands with 4xx/5xx replies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One accepted mail: the envelope, the raw DATA (dot-unstuffed, CRLF
/// kept) and the credentials the session authenticated with, if any.
#[derive(Debug, Clone)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: String,
    pub auth: Option<Auth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub mechanism: String,
    pub user: String,
    pub password: String,
}

/// The SMTP verbs a script can answer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Auth,
    MailFrom,
    RcptTo,
    /// The reply to the end of the message (after `.`), not to `DATA`.
    Data,
}

/// Answer the next `times` uses of `verb` with `reply` instead of success.
/// The reply may hold `{auth}`, replaced by the password the client sent
/// (a hostile server echoing credentials).
#[derive(Debug, Clone)]
pub struct Scripted {
    pub verb: Verb,
    pub reply: String,
    pub times: usize,
    /// A slow server: the reply comes this much later.
    pub delay: Duration,
}

impl Scripted {
    pub fn once(verb: Verb, reply: &str) -> Scripted {
        Scripted {
            verb,
            reply: reply.to_owned(),
            times: 1,
            delay: Duration::ZERO,
        }
    }

    pub fn always(verb: Verb, reply: &str) -> Scripted {
        Scripted {
            times: usize::MAX,
            ..Scripted::once(verb, reply)
        }
    }

    /// Answers once, `delay` late (after a client with a shorter timeout
    /// has given up).
    pub fn late(verb: Verb, reply: &str, delay: Duration) -> Scripted {
        Scripted {
            delay,
            ..Scripted::once(verb, reply)
        }
    }
}

/// A running sink; stops when dropped.
pub struct SmtpSink {
    pub port: u16,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Mail>,
    /// Connections accepted so far (to see the pool reuse one).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Script = Arc<Mutex<VecDeque<Scripted>>>;

impl SmtpSink {
    /// Binds before returning, so a client may connect at once.
    pub async fn start(script: Vec<Scripted>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMTP sink");
        let port = listener.local_addr().expect("sink address").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let script: Script = Arc::new(Mutex::new(script.into()));
        let stop = CancellationToken::new();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tracker = tokio_util::task::TaskTracker::new();
        {
            let stop = stop.clone();
            let connections = connections.clone();
            let sessions = tracker.clone();
            tracker.spawn(async move {
                loop {
                    let stream = tokio::select! {
                        _ = stop.cancelled() => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (tx, script, stop) = (tx.clone(), script.clone(), stop.clone());
                    sessions.spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = session(stream, tx, script) => {}
                        }
                    });
                }
            });
        }
        tracker.close();
        SmtpSink {
            port,
            rx,
            connections,
            stop,
        }
    }

    /// The next accepted mail, or a panic after a generous bound (a test
    /// that waits forever tells nothing).
    pub async fn next(&mut self) -> Mail {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .expect("a mail within 30 s")
            .expect("sink still running")
    }
}

/// The scripted reply for `verb`, if one is due.
async fn scripted(script: &Script, verb: Verb) -> Option<String> {
    let (reply, delay) = {
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        let i = script.iter().position(|s| s.verb == verb)?;
        let entry = &mut script[i];
        let found = (entry.reply.clone(), entry.delay);
        entry.times = entry.times.saturating_sub(1);
        if entry.times == 0 {
            script.remove(i);
        }
        found
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Some(reply)
}

/// One SMTP session. Errors (the client went away) just end it.
async fn session(
    stream: TcpStream,
    tx: tokio::sync::mpsc::UnboundedSender<Mail>,
    script: Script,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let reply = async |w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str| {
        w.write_all(format!("{text}\r\n").as_bytes()).await
    };
    reply(&mut write, "220 sink.test ESMTP jobwatch test sink").await?;
    let mut auth: Option<Auth> = None;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']).to_owned();
        let upper = command.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("");
        match verb {
            "EHLO" => {
                write
                    .write_all(
                        b"250-sink.test greets you\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                    )
                    .await?;
            }
            "HELO" => reply(&mut write, "250 sink.test").await?,
            "AUTH" => {
                let parts: Vec<&str> = command.split(' ').collect();
                let mechanism = parts.get(1).map(|m| m.to_ascii_uppercase());
                let got = match mechanism.as_deref() {
                    Some("PLAIN") => {
                        let blob = match parts.get(2) {
                            Some(b) => b.to_string(),
                            None => {
                                reply(&mut write, "334 ").await?;
                                read_trimmed(&mut lines).await?
                            }
                        };
                        decode_plain(&blob)
                    }
                    Some("LOGIN") => {
                        reply(&mut write, "334 VXNlcm5hbWU6").await?;
                        let user = decode(&read_trimmed(&mut lines).await?);
                        reply(&mut write, "334 UGFzc3dvcmQ6").await?;
                        let password = decode(&read_trimmed(&mut lines).await?);
                        Some(Auth {
                            mechanism: "LOGIN".into(),
                            user,
                            password,
                        })
                    }
                    _ => None,
                };
                match (got, scripted(&script, Verb::Auth).await) {
                    (None, _) => reply(&mut write, "501 5.5.4 malformed AUTH").await?,
                    (Some(a), Some(r)) => {
                        reply(&mut write, &r.replace("{auth}", &a.password)).await?
                    }
                    (Some(a), None) => {
                        auth = Some(a);
                        reply(&mut write, "235 2.7.0 Authentication successful").await?;
                    }
                }
            }
            "MAIL" => match scripted(&script, Verb::MailFrom).await {
                Some(r) => reply(&mut write, &r).await?,
                None => {
                    mail_from = Some(address(&command));
                    rcpt_to.clear();
                    reply(&mut write, "250 2.1.0 Ok").await?;
                }
            },
            "RCPT" => match scripted(&script, Verb::RcptTo).await {
                Some(r) => reply(&mut write, &r).await?,
                None => {
                    rcpt_to.push(address(&command));
                    reply(&mut write, "250 2.1.5 Ok").await?;
                }
            },
            "DATA" => {
                if mail_from.is_none() || rcpt_to.is_empty() {
                    reply(&mut write, "503 5.5.1 need MAIL and RCPT first").await?;
                    continue;
                }
                reply(&mut write, "354 End data with <CR><LF>.<CR><LF>").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // Dot-stuffing (RFC 5321 §4.5.2).
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                let envelope_from = mail_from.take().unwrap_or_default();
                let envelope_to = std::mem::take(&mut rcpt_to);
                match scripted(&script, Verb::Data).await {
                    Some(r) => reply(&mut write, &r).await?,
                    None => {
                        let _ = tx.send(Mail {
                            mail_from: envelope_from,
                            rcpt_to: envelope_to,
                            data,
                            auth: auth.clone(),
                        });
                        reply(&mut write, "250 2.0.0 Ok: queued as SINK1").await?;
                    }
                }
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                reply(&mut write, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(&mut write, "250 2.0.0 Ok").await?,
            "QUIT" => {
                reply(&mut write, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => reply(&mut write, "502 5.5.2 command not recognized").await?,
        }
    }
}

async fn read_trimmed(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<String> {
    let mut line = String::new();
    lines.read_line(&mut line).await?;
    Ok(line.trim().to_owned())
}

fn decode(b64: &str) -> String {
    BASE64
        .decode(b64.trim())
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
        .unwrap_or_default()
}

/// `AUTH PLAIN`: base64 of `authzid \0 user \0 password`.
fn decode_plain(b64: &str) -> Option<Auth> {
    let raw = decode(b64);
    let mut parts = raw.split('\0');
    let _authzid = parts.next()?;
    Some(Auth {
        mechanism: "PLAIN".into(),
        user: parts.next()?.to_owned(),
        password: parts.next()?.to_owned(),
    })
}

/// The address inside `MAIL FROM:<a@b> SIZE=…` or `RCPT TO:<a@b>`.
fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}
