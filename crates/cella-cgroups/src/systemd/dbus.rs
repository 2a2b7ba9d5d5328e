//! A small synchronous D-Bus client: the wire format (marshalling of the types systemd's
//! manager API needs) and a connection over a UNIX socket with SASL EXTERNAL.
//!
//! Why our own: the runtime path has no async runtime and no C libraries (DESIGN.md):
//! zbus is async, dbus-rs binds libdbus; rustbus is synchronous pure Rust but a general
//! library for what is here six method calls and one signal on one peer.
//!
//! Wire format (D-Bus specification, "Message Protocol" / "Marshaling"): little-endian
//! here; every value is aligned to its type's alignment *relative to the message start*
//! (y g v: 1, b u i s o a: 4, t x ( {: 8); strings are a u32 length, the bytes and a NUL;
//! signatures a u8 length, the bytes and a NUL; an array is a u32 byte length (not
//! counting the padding before the first element), padding to the element alignment,
//! then the elements; a variant is a signature then the value. A message is the header
//! `yyyyuua(yv)`, padding to 8, then the body.

use std::collections::VecDeque;
use std::io::{self, Read, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What went wrong talking D-Bus.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    /// Connecting, reading or writing the socket failed.
    #[error("{op} `{path}`")]
    Io {
        /// The operation, e.g. "connect to".
        op: &'static str,
        /// The socket.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The peer did not accept our authentication.
    #[error("authentication on `{path}` refused: {reply:?}")]
    Auth {
        /// The socket.
        path: PathBuf,
        /// What the server answered.
        reply: String,
    },
    /// A message did not follow the wire format.
    #[error("malformed D-Bus message: {0}")]
    Protocol(String),
    /// The peer answered a call with an error.
    #[error("{name}: {message}")]
    Remote {
        /// The D-Bus error name, e.g. `org.freedesktop.systemd1.NoSuchUnit`.
        name: String,
        /// The error's text.
        message: String,
    },
    /// No answer came in time.
    #[error("no reply within {millis} ms")]
    Timeout {
        /// How long we waited.
        millis: u64,
    },
}

fn protocol(reason: impl Into<String>) -> DbusError {
    DbusError::Protocol(reason.into())
}

/// A D-Bus value of the types used here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `y`
    Byte(u8),
    /// `b`
    Bool(bool),
    /// `u`
    U32(u32),
    /// `t`
    U64(u64),
    /// `s`
    Str(String),
    /// `o`
    Path(String),
    /// `g`
    Sig(String),
    /// `a<elem>`: the element signature is kept so an empty array has a type.
    Array(String, Vec<Value>),
    /// `(...)`
    Struct(Vec<Value>),
    /// `v`
    Variant(Box<Value>),
}

impl Value {
    /// The value's type signature.
    pub fn signature(&self) -> String {
        match self {
            Value::Byte(_) => "y".into(),
            Value::Bool(_) => "b".into(),
            Value::U32(_) => "u".into(),
            Value::U64(_) => "t".into(),
            Value::Str(_) => "s".into(),
            Value::Path(_) => "o".into(),
            Value::Sig(_) => "g".into(),
            Value::Array(elem, _) => format!("a{elem}"),
            Value::Struct(fields) => {
                let inner: String = fields.iter().map(Value::signature).collect();
                format!("({inner})")
            }
            Value::Variant(_) => "v".into(),
        }
    }

    /// Shorthand for a string.
    pub fn str(s: &str) -> Value {
        Value::Str(s.to_owned())
    }

    /// The string inside a `s`, `o` or `g`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Path(s) | Value::Sig(s) => Some(s),
            _ => None,
        }
    }

    /// A `(sv)` property for systemd's `a(sv)` arguments.
    pub fn property(name: &str, v: Value) -> Value {
        Value::Struct(vec![Value::str(name), Value::Variant(Box::new(v))])
    }
}

/// Alignment of a type by its first signature character.
fn alignment(code: u8) -> usize {
    match code {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b't' | b'x' | b'd' | b'(' | b'{' => 8,
        _ => 4,
    }
}

/// Length of the first complete type in `sig`.
fn complete_type_len(sig: &[u8]) -> Result<usize, DbusError> {
    fn walk(sig: &[u8], depth: usize) -> Result<usize, DbusError> {
        if depth > 64 {
            return Err(protocol("signature nested too deeply"));
        }
        match sig.first() {
            None => Err(protocol("signature ends inside a type")),
            Some(b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b's' | b'o')
            | Some(b'g' | b'v' | b'h') => Ok(1),
            Some(b'a') => Ok(1 + walk(&sig[1..], depth + 1)?),
            Some(&open @ (b'(' | b'{')) => {
                let close = if open == b'(' { b')' } else { b'}' };
                let mut i = 1;
                while sig.get(i) != Some(&close) {
                    if i >= sig.len() {
                        return Err(protocol("unterminated struct in signature"));
                    }
                    i += walk(&sig[i..], depth + 1)?;
                }
                if i == 1 {
                    return Err(protocol("empty struct in signature"));
                }
                Ok(i + 1)
            }
            Some(c) => Err(protocol(format!(
                "unsupported type {:?} in signature",
                *c as char
            ))),
        }
    }
    walk(sig, 0)
}

/// Split a signature into its complete types.
fn split_signature(sig: &str) -> Result<Vec<&str>, DbusError> {
    let mut out = Vec::new();
    let mut rest = sig;
    while !rest.is_empty() {
        let n = complete_type_len(rest.as_bytes())?;
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    Ok(out)
}

/// Appends marshalled values to a buffer whose offset 0 is the message start.
#[derive(Default)]
pub struct Encoder {
    /// The bytes so far.
    pub buf: Vec<u8>,
}

impl Encoder {
    fn pad(&mut self, align: usize) {
        while self.buf.len() % align != 0 {
            self.buf.push(0);
        }
    }

    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Marshal one value.
    pub fn value(&mut self, v: &Value) -> Result<(), DbusError> {
        match v {
            Value::Byte(b) => self.buf.push(*b),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::U32(u) => self.u32(*u),
            Value::U64(t) => {
                self.pad(8);
                self.buf.extend_from_slice(&t.to_le_bytes());
            }
            Value::Str(s) | Value::Path(s) => {
                if s.contains('\0') {
                    return Err(protocol(format!("string {s:?} contains NUL")));
                }
                let len = u32::try_from(s.len()).map_err(|_| protocol("string too long"))?;
                self.u32(len);
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.push(0);
            }
            Value::Sig(s) => {
                let len = u8::try_from(s.len()).map_err(|_| protocol("signature too long"))?;
                split_signature(s)?;
                self.buf.push(len);
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.push(0);
            }
            Value::Array(elem, items) => {
                let code = *elem
                    .as_bytes()
                    .first()
                    .ok_or_else(|| protocol("array without element type"))?;
                self.u32(0);
                let len_at = self.buf.len() - 4;
                // The padding to the first element is not part of the length.
                self.pad(alignment(code));
                let start = self.buf.len();
                for item in items {
                    if item.signature() != *elem {
                        return Err(protocol(format!(
                            "array of {elem} holds a {}",
                            item.signature()
                        )));
                    }
                    self.value(item)?;
                }
                let len = u32::try_from(self.buf.len() - start)
                    .ok()
                    .filter(|l| *l <= 1 << 26)
                    .ok_or_else(|| protocol("array longer than 64 MiB"))?;
                self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Value::Struct(fields) => {
                self.pad(8);
                for f in fields {
                    self.value(f)?;
                }
            }
            Value::Variant(inner) => {
                self.value(&Value::Sig(inner.signature()))?;
                self.value(inner)?;
            }
        }
        Ok(())
    }
}

/// Reads marshalled values from a buffer whose offset 0 is the message start.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at `pos` of `buf`.
    pub fn new(buf: &'a [u8], pos: usize) -> Decoder<'a> {
        Decoder { buf, pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DbusError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| protocol("value runs past the end of the message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn align(&mut self, a: usize) -> Result<(), DbusError> {
        let pad = (a - self.pos % a) % a;
        if self.take(pad)?.iter().any(|b| *b != 0) {
            return Err(protocol("non-zero padding"));
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, DbusError> {
        self.align(4)?;
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn text(&mut self, len: usize) -> Result<String, DbusError> {
        let b = self.take(len + 1)?;
        if b[len] != 0 {
            return Err(protocol("string not NUL-terminated"));
        }
        String::from_utf8(b[..len].to_vec()).map_err(|_| protocol("string is not UTF-8"))
    }

    /// Unmarshal one value of the complete type `sig`.
    pub fn value(&mut self, sig: &str) -> Result<Value, DbusError> {
        self.value_at(sig, 0)
    }

    fn value_at(&mut self, sig: &str, depth: usize) -> Result<Value, DbusError> {
        if depth > 64 {
            return Err(protocol("value nested too deeply"));
        }
        let b = sig.as_bytes();
        Ok(match b.first() {
            Some(b'y') => Value::Byte(self.take(1)?[0]),
            Some(b'b') => match self.u32()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                n => return Err(protocol(format!("boolean {n}"))),
            },
            // Types we never send are read into the nearest variant, so any signal
            // systemd broadcasts decodes (and is skipped): i h as u32, n q widened, d as
            // its bits.
            Some(b'u' | b'i' | b'h') => Value::U32(self.u32()?),
            Some(b'n' | b'q') => {
                self.align(2)?;
                let s = self.take(2)?;
                Value::U32(u32::from(u16::from_le_bytes([s[0], s[1]])))
            }
            Some(b't' | b'x' | b'd') => {
                self.align(8)?;
                let s = self.take(8)?;
                Value::U64(u64::from_le_bytes(s.try_into().expect("took 8 bytes")))
            }
            Some(b's') => {
                let len = self.u32()? as usize;
                Value::Str(self.text(len)?)
            }
            Some(b'o') => {
                let len = self.u32()? as usize;
                Value::Path(self.text(len)?)
            }
            Some(b'g') => {
                let len = usize::from(self.take(1)?[0]);
                Value::Sig(self.text(len)?)
            }
            Some(b'v') => {
                let len = usize::from(self.take(1)?[0]);
                let inner_sig = self.text(len)?;
                if complete_type_len(inner_sig.as_bytes())? != inner_sig.len() {
                    return Err(protocol(format!(
                        "variant signature {inner_sig:?} is not one type"
                    )));
                }
                Value::Variant(Box::new(self.value_at(&inner_sig, depth + 1)?))
            }
            Some(b'a') => {
                let elem = &sig[1..];
                let len = self.u32()? as usize;
                if len > 1 << 26 {
                    return Err(protocol("array longer than 64 MiB"));
                }
                self.align(alignment(elem.as_bytes()[0]))?;
                let end = self.pos + len;
                if end > self.buf.len() {
                    return Err(protocol("array runs past the end of the message"));
                }
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value_at(elem, depth + 1)?);
                }
                if self.pos != end {
                    return Err(protocol("array elements overrun its length"));
                }
                Value::Array(elem.to_owned(), items)
            }
            Some(b'(' | b'{') => {
                self.align(8)?;
                let inner = &sig[1..sig.len() - 1];
                let mut fields = Vec::new();
                for t in split_signature(inner)? {
                    fields.push(self.value_at(t, depth + 1)?);
                }
                Value::Struct(fields)
            }
            _ => return Err(protocol(format!("cannot decode type {sig:?}"))),
        })
    }
}

/// The message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// A method call.
    MethodCall = 1,
    /// A method's reply.
    MethodReturn = 2,
    /// An error reply.
    Error = 3,
    /// A signal.
    Signal = 4,
}

/// A D-Bus message: the header fields used here and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its type.
    pub kind: MessageType,
    /// The serial the sender gave it.
    pub serial: u32,
    /// PATH
    pub path: Option<String>,
    /// INTERFACE
    pub interface: Option<String>,
    /// MEMBER
    pub member: Option<String>,
    /// ERROR_NAME
    pub error_name: Option<String>,
    /// REPLY_SERIAL
    pub reply_serial: Option<u32>,
    /// DESTINATION
    pub destination: Option<String>,
    /// The body's values.
    pub body: Vec<Value>,
}

const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SIGNATURE: u8 = 8;

impl Message {
    /// A method call to `destination` on object `path`.
    pub fn method_call(
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        body: Vec<Value>,
    ) -> Message {
        Message {
            kind: MessageType::MethodCall,
            serial: 0,
            path: Some(path.to_owned()),
            interface: Some(interface.to_owned()),
            member: Some(member.to_owned()),
            error_name: None,
            reply_serial: None,
            destination: Some(destination.to_owned()),
            body,
        }
    }

    /// The wire bytes, little-endian.
    pub fn encode(&self) -> Result<Vec<u8>, DbusError> {
        let mut body = Encoder::default();
        for v in &self.body {
            body.value(v)?;
        }
        let sig: String = self.body.iter().map(Value::signature).collect();
        let mut fields = Vec::new();
        let mut field = |code: u8, v: Value| {
            fields.push(Value::Struct(vec![
                Value::Byte(code),
                Value::Variant(Box::new(v)),
            ]));
        };
        if let Some(p) = &self.path {
            field(FIELD_PATH, Value::Path(p.clone()));
        }
        if let Some(i) = &self.interface {
            field(FIELD_INTERFACE, Value::Str(i.clone()));
        }
        if let Some(m) = &self.member {
            field(FIELD_MEMBER, Value::Str(m.clone()));
        }
        if let Some(e) = &self.error_name {
            field(FIELD_ERROR_NAME, Value::Str(e.clone()));
        }
        if let Some(r) = self.reply_serial {
            field(FIELD_REPLY_SERIAL, Value::U32(r));
        }
        if let Some(d) = &self.destination {
            field(FIELD_DESTINATION, Value::Str(d.clone()));
        }
        if !sig.is_empty() {
            field(FIELD_SIGNATURE, Value::Sig(sig));
        }
        let mut e = Encoder::default();
        e.buf.extend_from_slice(&[b'l', self.kind as u8, 0, 1]);
        let body_len = u32::try_from(body.buf.len()).map_err(|_| protocol("body too long"))?;
        e.buf.extend_from_slice(&body_len.to_le_bytes());
        e.buf.extend_from_slice(&self.serial.to_le_bytes());
        e.value(&Value::Array("(yv)".into(), fields))?;
        e.pad(8);
        e.buf.extend_from_slice(&body.buf);
        Ok(e.buf)
    }

    /// How many bytes the whole message has, from its first 16 bytes.
    pub fn total_len(head: &[u8; 16]) -> Result<usize, DbusError> {
        if head[0] != b'l' {
            return Err(protocol(format!(
                "byte order {:?}: only little-endian is read",
                head[0] as char
            )));
        }
        let body = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
        let fields = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        let total = 16 + fields.div_ceil(8) * 8 + body;
        if total > 1 << 27 {
            return Err(protocol("message longer than 128 MiB"));
        }
        Ok(total)
    }

    /// Parse one whole message.
    pub fn decode(buf: &[u8]) -> Result<Message, DbusError> {
        let head: &[u8; 16] = buf
            .get(..16)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| protocol("message shorter than its header"))?;
        if Message::total_len(head)? != buf.len() {
            return Err(protocol("message length does not match its header"));
        }
        let kind = match buf[1] {
            1 => MessageType::MethodCall,
            2 => MessageType::MethodReturn,
            3 => MessageType::Error,
            4 => MessageType::Signal,
            t => return Err(protocol(format!("message type {t}"))),
        };
        if buf[3] != 1 {
            return Err(protocol(format!("protocol version {}", buf[3])));
        }
        let serial = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        let mut d = Decoder::new(buf, 12);
        let fields = match d.value("a(yv)")? {
            Value::Array(_, fields) => fields,
            _ => return Err(protocol("header fields are not an array")),
        };
        d.align(8)?;
        let mut m = Message {
            kind,
            serial,
            path: None,
            interface: None,
            member: None,
            error_name: None,
            reply_serial: None,
            destination: None,
            body: Vec::new(),
        };
        let mut sig = String::new();
        for f in fields {
            let Value::Struct(parts) = f else { continue };
            let (Some(Value::Byte(code)), Some(Value::Variant(v))) = (parts.first(), parts.get(1))
            else {
                continue;
            };
            let s = v.as_str().map(str::to_owned);
            match (*code, v.as_ref()) {
                (FIELD_PATH, _) => m.path = s,
                (FIELD_INTERFACE, _) => m.interface = s,
                (FIELD_MEMBER, _) => m.member = s,
                (FIELD_ERROR_NAME, _) => m.error_name = s,
                (FIELD_REPLY_SERIAL, Value::U32(r)) => m.reply_serial = Some(*r),
                (FIELD_DESTINATION, _) => m.destination = s,
                (FIELD_SIGNATURE, _) => sig = s.unwrap_or_default(),
                _ => {}
            }
        }
        for t in split_signature(&sig)? {
            m.body.push(d.value(t)?);
        }
        if d.pos != buf.len() {
            return Err(protocol("bytes after the body"));
        }
        Ok(m)
    }
}

/// A connection to one D-Bus peer (systemd's private socket, or a bus after `Hello`).
pub struct Connection {
    stream: UnixStream,
    path: PathBuf,
    serial: u32,
    /// Signals read while waiting for a reply, oldest first.
    signals: VecDeque<Message>,
    timeout: Duration,
}

impl Connection {
    /// Connect to `path` and authenticate as our effective uid (SASL EXTERNAL).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Connection, DbusError> {
        let io_err = |op| {
            move |source| DbusError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        };
        let mut stream = UnixStream::connect(path).map_err(io_err("connect to"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io_err("set a timeout on"))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(io_err("set a timeout on"))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        // AUTH and BEGIN go out in one write, before the server's OK is read (as sd-bus
        // clients do). Sending BEGIN only after OK lets it and the first message reach
        // the server in one read, and systemd 252 then leaves that message in its buffer
        // unprocessed until more bytes arrive (seen here: StopUnit answered only when we
        // hung up 30 s later).
        stream
            .write_all(format!("\0AUTH EXTERNAL {}\r\nBEGIN\r\n", hex(&uid.to_string())).as_bytes())
            .map_err(io_err("write to"))?;
        let reply = read_line(&mut stream).map_err(io_err("read from"))?;
        if !reply.starts_with("OK ") {
            return Err(DbusError::Auth {
                path: path.to_owned(),
                reply,
            });
        }
        Ok(Connection {
            stream,
            path: path.to_owned(),
            serial: 0,
            signals: VecDeque::new(),
            timeout,
        })
    }

    fn io(&self, op: &'static str) -> impl Fn(io::Error) -> DbusError + '_ {
        move |source| {
            if matches!(
                source.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                DbusError::Timeout {
                    millis: self.timeout.as_millis() as u64,
                }
            } else {
                DbusError::Io {
                    op,
                    path: self.path.clone(),
                    source,
                }
            }
        }
    }

    fn send(&mut self, mut m: Message) -> Result<u32, DbusError> {
        self.serial = self.serial.wrapping_add(1).max(1);
        m.serial = self.serial;
        let bytes = m.encode()?;
        self.stream.write_all(&bytes).map_err(self.io("write to"))?;
        Ok(m.serial)
    }

    fn receive(&mut self) -> Result<Message, DbusError> {
        let mut head = [0u8; 16];
        self.stream
            .read_exact(&mut head)
            .map_err(self.io("read from"))?;
        let total = Message::total_len(&head)?;
        let mut buf = head.to_vec();
        buf.resize(total, 0);
        self.stream
            .read_exact(&mut buf[16..])
            .map_err(self.io("read from"))?;
        Message::decode(&buf)
    }

    /// Call a method and wait for its reply; an error reply becomes [`DbusError::Remote`].
    /// Signals that arrive meanwhile are kept for [`wait_signal`](Self::wait_signal).
    pub fn call(&mut self, m: Message) -> Result<Vec<Value>, DbusError> {
        let serial = self.send(m)?;
        loop {
            let r = self.receive()?;
            match r.kind {
                MessageType::Signal => self.signals.push_back(r),
                MessageType::MethodReturn if r.reply_serial == Some(serial) => return Ok(r.body),
                MessageType::Error if r.reply_serial == Some(serial) => {
                    return Err(DbusError::Remote {
                        name: r.error_name.unwrap_or_default(),
                        message: r
                            .body
                            .first()
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    });
                }
                // Replies to nothing we wait for and calls to us: not ours to answer.
                _ => {}
            }
        }
    }

    /// Wait up to `timeout` for a signal that `want` accepts; other signals are dropped.
    pub fn wait_signal(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Message) -> bool,
    ) -> Result<Message, DbusError> {
        while let Some(m) = self.signals.pop_front() {
            if want(&m) {
                return Ok(m);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DbusError::Timeout {
                    millis: timeout.as_millis() as u64,
                });
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(self.io("set a timeout on"))?;
            let r = self.receive();
            self.stream
                .set_read_timeout(Some(self.timeout))
                .map_err(self.io("set a timeout on"))?;
            let r = r?;
            if r.kind == MessageType::Signal && want(&r) {
                return Ok(r);
            }
        }
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Read one SASL line (up to "\r\n") byte by byte, so nothing after it is consumed.
fn read_line(s: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.push(b[0]);
        if line.len() > 4096 {
            return Err(io::Error::other("SASL line longer than 4 KiB"));
        }
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut e = Encoder::default();
        e.value(v).unwrap();
        e.buf
    }

    fn roundtrip(v: &Value) {
        let bytes = enc(v);
        let mut d = Decoder::new(&bytes, 0);
        assert_eq!(d.value(&v.signature()).unwrap(), *v);
        assert_eq!(d.pos, bytes.len());
    }

    // Byte sequences below follow the specification's marshalling table by hand.

    #[test]
    fn basic_types() {
        assert_eq!(enc(&Value::Byte(7)), [7]);
        assert_eq!(enc(&Value::Bool(true)), [1, 0, 0, 0]);
        assert_eq!(enc(&Value::U32(0x01020304)), [4, 3, 2, 1]);
        assert_eq!(
            enc(&Value::U64(0x0102030405060708)),
            [8, 7, 6, 5, 4, 3, 2, 1]
        );
        // STRING: u32 length, bytes, NUL.
        assert_eq!(enc(&Value::str("foo")), [3, 0, 0, 0, b'f', b'o', b'o', 0]);
        assert_eq!(enc(&Value::Path("/".into())), [1, 0, 0, 0, b'/', 0]);
        // SIGNATURE: u8 length, bytes, NUL.
        assert_eq!(enc(&Value::Sig("a(sv)".into())), b"\x05a(sv)\0");
    }

    #[test]
    fn alignment_is_relative_to_the_start() {
        let mut e = Encoder::default();
        e.value(&Value::Byte(1)).unwrap();
        e.value(&Value::U32(2)).unwrap();
        e.value(&Value::Byte(3)).unwrap();
        e.value(&Value::U64(4)).unwrap();
        assert_eq!(
            e.buf,
            [
                1, 0, 0, 0, 2, 0, 0, 0, // y, pad to 4, u
                3, 0, 0, 0, 0, 0, 0, 0, // y, pad to 8
                4, 0, 0, 0, 0, 0, 0, 0, // t
            ]
        );
    }

    #[test]
    fn arrays() {
        // au [1, 2]: length 8 (bytes of elements), then the elements.
        let au = Value::Array("u".into(), vec![Value::U32(1), Value::U32(2)]);
        assert_eq!(enc(&au), [8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        // at [5]: the padding from offset 4 to 8 is not counted in the length.
        let at = Value::Array("t".into(), vec![Value::U64(5)]);
        assert_eq!(enc(&at), [8, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        // An empty array of 8-aligned elements still pads to the (absent) first one.
        let empty = Value::Array("(sv)".into(), vec![]);
        assert_eq!(enc(&empty), [0, 0, 0, 0, 0, 0, 0, 0]);
        // ay: no padding.
        let ay = Value::Array("y".into(), vec![Value::Byte(0b101)]);
        assert_eq!(enc(&ay), [1, 0, 0, 0, 5]);
        // as ["a", "bc"]: "a" (4..10), pad to 12, "bc" (12..19): 15 bytes.
        let strs = Value::Array("s".into(), vec![Value::str("a"), Value::str("bc")]);
        assert_eq!(
            enc(&strs),
            [
                15, 0, 0, 0, 1, 0, 0, 0, b'a', 0, 0, 0, 2, 0, 0, 0, b'b', b'c', 0
            ]
        );
        for v in [au, at, empty, ay, strs] {
            roundtrip(&v);
        }
    }

    #[test]
    fn variants_and_properties() {
        // v holding u 9: signature "u", pad to 4, value.
        let v = Value::Variant(Box::new(Value::U32(9)));
        assert_eq!(enc(&v), [1, b'u', 0, 0, 9, 0, 0, 0]);
        // a(sv) with one ("Delegate", b true).
        let props = Value::Array(
            "(sv)".into(),
            vec![Value::property("Delegate", Value::Bool(true))],
        );
        // Length 20 (elements from 8 to 28), pad to 8; the struct at 8: "Delegate"
        // (8..21), the variant's signature "b" (21..24), the boolean (24..28).
        let mut want = vec![20, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0];
        want.extend_from_slice(b"Delegate\0");
        want.extend_from_slice(&[1, b'b', 0]);
        want.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(enc(&props), want);
        roundtrip(&props);
        // a(sa(sv)): systemd's "aux" argument, empty.
        roundtrip(&Value::Array("(sa(sv))".into(), vec![]));
        roundtrip(&Value::Array(
            "(sa(sv))".into(),
            vec![Value::Struct(vec![
                Value::str("x.scope"),
                Value::Array(
                    "(sv)".into(),
                    vec![Value::property(
                        "PIDs",
                        Value::Array("u".into(), vec![Value::U32(42)]),
                    )],
                ),
            ])],
        ));
        roundtrip(&Value::Variant(Box::new(Value::Array(
            "y".into(),
            vec![Value::Byte(3), Value::Byte(255)],
        ))));
    }

    #[test]
    fn every_basic_type_decodes() {
        // (n q i x d h) from offset 0: n at 0, q at 2, i at 4, x at 8, d at 16, h at 24.
        let mut bytes = vec![0xff, 0xff, 2, 0, 3, 0, 0, 0];
        bytes.extend_from_slice(&4u64.to_le_bytes());
        bytes.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
        bytes.extend_from_slice(&[7, 0, 0, 0]);
        let mut d = Decoder::new(&bytes, 0);
        assert_eq!(
            d.value("(nqixdh)").unwrap(),
            Value::Struct(vec![
                Value::U32(0xffff),
                Value::U32(2),
                Value::U32(3),
                Value::U64(4),
                Value::U64(1.5f64.to_bits()),
                Value::U32(7),
            ])
        );
        // a{sv}: dict entries align like structs.
        let mut e = Encoder::default();
        e.value(&Value::Array(
            "(sv)".into(),
            vec![Value::property("A", Value::U32(1))],
        ))
        .unwrap();
        let mut d = Decoder::new(&e.buf, 0);
        assert_eq!(
            d.value("a{sv}").unwrap(),
            Value::Array(
                "{sv}".into(),
                vec![Value::Struct(vec![
                    Value::str("A"),
                    Value::Variant(Box::new(Value::U32(1)))
                ])]
            )
        );
    }

    #[test]
    fn mistyped_arrays_are_refused() {
        let mut e = Encoder::default();
        let bad = Value::Array("u".into(), vec![Value::str("x")]);
        assert!(e.value(&bad).is_err());
    }

    #[test]
    fn a_method_call_message() {
        let m = Message {
            serial: 1,
            ..Message::method_call(
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "GetUnit",
                vec![Value::str("a.scope")],
            )
        };
        let bytes = m.encode().unwrap();
        // Fixed header: 'l', METHOD_CALL, no flags, version 1, body length 12, serial 1.
        assert_eq!(&bytes[..12], &[b'l', 1, 0, 1, 12, 0, 0, 0, 1, 0, 0, 0]);
        // First header field at 16: (PATH, v "o" "/org/freedesktop/systemd1").
        assert_eq!(&bytes[16..20], &[1, 1, b'o', 0]);
        // The body starts 8-aligned and is the string.
        let body = &bytes[bytes.len() - 12..];
        assert_eq!(
            body,
            &[7, 0, 0, 0, b'a', b'.', b's', b'c', b'o', b'p', b'e', 0]
        );
        assert_eq!((bytes.len() - 12) % 8, 0);
        let head: [u8; 16] = bytes[..16].try_into().unwrap();
        assert_eq!(Message::total_len(&head).unwrap(), bytes.len());
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn an_error_and_a_signal_decode() {
        let err = Message {
            kind: MessageType::Error,
            serial: 9,
            path: None,
            interface: None,
            member: None,
            error_name: Some("org.freedesktop.systemd1.NoSuchUnit".into()),
            reply_serial: Some(3),
            destination: Some(":1.5".into()),
            body: vec![Value::str("Unit x.scope not loaded.")],
        };
        assert_eq!(Message::decode(&err.encode().unwrap()).unwrap(), err);
        // JobRemoved(u id, o job, s unit, s result)
        let sig = Message {
            kind: MessageType::Signal,
            serial: 10,
            path: Some("/org/freedesktop/systemd1".into()),
            interface: Some("org.freedesktop.systemd1.Manager".into()),
            member: Some("JobRemoved".into()),
            error_name: None,
            reply_serial: None,
            destination: None,
            body: vec![
                Value::U32(77),
                Value::Path("/org/freedesktop/systemd1/job/77".into()),
                Value::str("cella-x.scope"),
                Value::str("done"),
            ],
        };
        assert_eq!(Message::decode(&sig.encode().unwrap()).unwrap(), sig);
    }

    #[test]
    fn malformed_messages_are_errors() {
        let m = Message::method_call("d", "/", "i.f", "M", vec![Value::str("abc")]);
        let bytes = m.encode().unwrap();
        // Truncated.
        assert!(Message::decode(&bytes[..bytes.len() - 1]).is_err());
        // Big-endian is not read.
        let mut be = bytes.clone();
        be[0] = b'B';
        assert!(Message::decode(&be).is_err());
        // A string without its NUL.
        let mut no_nul = bytes.clone();
        *no_nul.last_mut().unwrap() = b'x';
        assert!(Message::decode(&no_nul).is_err());
        // An array length pointing past the end.
        let mut d = Decoder::new(&[0xff, 0xff, 0, 0], 0);
        assert!(d.value("au").is_err());
        // Signatures.
        assert!(split_signature("a").is_err());
        assert!(split_signature("(u").is_err());
        assert!(split_signature("()").is_err());
        assert_eq!(
            split_signature("a(sv)ua{sv}").unwrap(),
            ["a(sv)", "u", "a{sv}"]
        );
    }

    /// A peer on a real socket that, like systemd's sd-bus server, reads the whole
    /// authentication (BEGIN included) before it answers OK, then answers one call.
    #[test]
    fn connection_authenticates_and_calls_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("cella-dbus-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("bus");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut auth = Vec::new();
            let mut b = [0u8; 1];
            // A client waiting for OK before BEGIN would deadlock here (and time out).
            while !auth.ends_with(b"BEGIN\r\n") {
                assert_eq!(s.read(&mut b).unwrap(), 1, "client hung up during auth");
                auth.push(b[0]);
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            let want = format!("\0AUTH EXTERNAL {}\r\nBEGIN\r\n", hex(&uid.to_string()));
            assert_eq!(String::from_utf8_lossy(&auth), want);
            s.write_all(b"OK 0123456789abcdef\r\n").unwrap();
            let mut head = [0u8; 16];
            s.read_exact(&mut head).unwrap();
            let mut buf = head.to_vec();
            buf.resize(Message::total_len(&head).unwrap(), 0);
            s.read_exact(&mut buf[16..]).unwrap();
            let call = Message::decode(&buf).unwrap();
            assert_eq!(call.member.as_deref(), Some("StopUnit"));
            // A signal first (kept for wait_signal), then the error reply.
            let signal = Message {
                kind: MessageType::Signal,
                serial: 1,
                path: Some("/org/freedesktop/systemd1".into()),
                interface: Some("org.freedesktop.systemd1.Manager".into()),
                member: Some("JobRemoved".into()),
                error_name: None,
                reply_serial: None,
                destination: None,
                body: vec![
                    Value::U32(1),
                    Value::Path("/job/1".into()),
                    Value::str("a.scope"),
                    Value::str("done"),
                ],
            };
            s.write_all(&signal.encode().unwrap()).unwrap();
            let reply = Message {
                kind: MessageType::Error,
                serial: 2,
                path: None,
                interface: None,
                member: None,
                error_name: Some("org.freedesktop.systemd1.NoSuchUnit".into()),
                reply_serial: Some(call.serial),
                destination: None,
                body: vec![Value::str("Unit a.scope not loaded.")],
            };
            s.write_all(&reply.encode().unwrap()).unwrap();
        });
        let mut c = Connection::connect(&sock, Duration::from_secs(5)).unwrap();
        let e = c
            .call(Message::method_call(
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "StopUnit",
                vec![Value::str("a.scope"), Value::str("replace")],
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "org.freedesktop.systemd1.NoSuchUnit: Unit a.scope not loaded."
        );
        let sig = c
            .wait_signal(Duration::from_secs(1), |m| {
                m.body.get(1).and_then(Value::as_str) == Some("/job/1")
            })
            .unwrap();
        assert_eq!(sig.body[3], Value::str("done"));
        server.join().unwrap();
        // Nothing more comes: a timeout, named as such.
        let e = c
            .wait_signal(Duration::from_millis(50), |_| true)
            .unwrap_err();
        assert!(
            matches!(e, DbusError::Timeout { .. } | DbusError::Io { .. }),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Whatever a peer sends, decoding answers Ok or Err and never panics: every byte of a
    /// message with nested types set to a few telling values, and every truncation.
    #[test]
    fn corrupted_messages_never_panic() {
        let m = Message::method_call(
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "StartTransientUnit",
            vec![
                Value::str("a.scope"),
                Value::Array(
                    "(sv)".into(),
                    vec![
                        Value::property("PIDs", Value::Array("u".into(), vec![Value::U32(1)])),
                        Value::property("MemoryMax", Value::U64(1 << 20)),
                        Value::property("AllowedCPUs", Value::Array("y".into(), vec![])),
                    ],
                ),
                Value::Array("(sa(sv))".into(), vec![]),
            ],
        );
        let bytes = m.encode().unwrap();
        for i in 0..bytes.len() {
            for v in [0u8, 1, 8, b'a', b'(', b'v', 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = Message::decode(&b);
            }
            let _ = Message::decode(&bytes[..i]);
        }
    }

    #[test]
    fn sasl_hex_of_the_uid() {
        assert_eq!(hex("0"), "30");
        assert_eq!(hex("1000"), "31303030");
    }
}
