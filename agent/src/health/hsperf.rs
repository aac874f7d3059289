//! A bounds-checked reader of the HotSpot perf-data ("hsperfdata") file, version 2.0
//! (spec jvm-health §1.2).
//!
//! The JVM rewrites the file in place while we read it, and a file can be truncated or left
//! half-written by a dying JVM, so every offset read from the file is checked against the
//! buffer before use: a bad file yields an [`HsperfError`], never a panic. The only crate that
//! parses this format is GPL-licensed, hence this reader.

use thiserror::Error;

/// The magic at offset 0, in this byte order whatever the file's byte order is.
pub const MAGIC: [u8; 4] = [0xCA, 0xFE, 0xC0, 0xC0];
/// Size of the prologue (header).
pub const PROLOGUE_LEN: usize = 32;
/// Size of the fixed part of every entry.
pub const ENTRY_HEADER_LEN: usize = 20;
/// Generations, spaces and collectors beyond this index are ignored, so that a corrupt name
/// such as `sun.gc.generation.4000000000.capacity` cannot make us allocate.
const MAX_INDEX: usize = 16;

/// Why a perf-data buffer was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HsperfError {
    /// Shorter than the prologue.
    #[error("perf data is {0} bytes, shorter than the 32-byte prologue")]
    TooShort(usize),
    /// Not a perf-data file.
    #[error("bad magic {0:02x?}, not a HotSpot perf-data file")]
    BadMagic([u8; 4]),
    /// Byte order flag other than 0 (big) or 1 (little).
    #[error("unknown byte order flag {0}")]
    ByteOrder(u8),
    /// A layout version this reader does not know.
    #[error("unsupported perf-data version {major}.{minor}")]
    Version {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The JVM has not finished initialising the region.
    #[error("perf data not yet accessible (JVM still initialising)")]
    NotAccessible,
    /// The prologue describes a region that does not fit the buffer.
    #[error("corrupt prologue: {0}")]
    Prologue(&'static str),
    /// An entry points outside the region or is malformed.
    #[error("corrupt entry #{index} at offset {offset}: {reason}")]
    Entry {
        /// Index of the entry in the walk.
        index: u32,
        /// Byte offset of the entry.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The decoded prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prologue {
    /// Multi-byte fields are big-endian.
    pub big_endian: bool,
    /// Major layout version (2).
    pub major: u8,
    /// Minor layout version (0).
    pub minor: u8,
    /// 1 once the JVM finished initialising the region.
    pub accessible: bool,
    /// Bytes of the region in use.
    pub used: u32,
    /// Bytes of counters that did not fit.
    pub overflow: u32,
    /// hrt ticks of the last structural change (an entry added).
    pub mod_time_stamp: i64,
    /// Offset of the first entry.
    pub entry_offset: u32,
    /// Number of entries.
    pub num_entries: u32,
}

/// The value of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A scalar `J` (i64) counter.
    Long(i64),
    /// A `B` byte vector: a string, cut at its first NUL.
    Bytes(&'a [u8]),
    /// Any other type or shape (never seen on JDK 17); kept so the walk can go on.
    Other(u8),
}

impl<'a> Value<'a> {
    /// The scalar, if this is a long.
    pub fn as_long(&self) -> Option<i64> {
        match self {
            Value::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is a byte vector holding UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// One named counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Counter name, e.g. `sun.gc.metaspace.used`.
    pub name: &'a str,
    /// Its value.
    pub value: Value<'a>,
}

fn rd_u32(buf: &[u8], at: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

fn rd_i64(buf: &[u8], at: usize, big: bool) -> Option<i64> {
    let b: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(if big {
        i64::from_be_bytes(b)
    } else {
        i64::from_le_bytes(b)
    })
}

/// Decodes and validates the prologue of `buf`.
pub fn prologue(buf: &[u8]) -> Result<Prologue, HsperfError> {
    if buf.len() < PROLOGUE_LEN {
        return Err(HsperfError::TooShort(buf.len()));
    }
    let magic: [u8; 4] = [buf[0], buf[1], buf[2], buf[3]];
    if magic != MAGIC {
        return Err(HsperfError::BadMagic(magic));
    }
    let big_endian = match buf[4] {
        0 => true,
        1 => false,
        other => return Err(HsperfError::ByteOrder(other)),
    };
    let (major, minor) = (buf[5], buf[6]);
    if major != 2 {
        return Err(HsperfError::Version { major, minor });
    }
    let field = |at| rd_u32(buf, at, big_endian).ok_or(HsperfError::TooShort(buf.len()));
    let p = Prologue {
        big_endian,
        major,
        minor,
        accessible: buf[7] != 0,
        used: field(8)?,
        overflow: field(12)?,
        mod_time_stamp: rd_i64(buf, 16, big_endian).ok_or(HsperfError::TooShort(buf.len()))?,
        entry_offset: field(24)?,
        num_entries: field(28)?,
    };
    if !p.accessible {
        return Err(HsperfError::NotAccessible);
    }
    if p.used as usize > buf.len() {
        return Err(HsperfError::Prologue("used is larger than the file"));
    }
    if (p.entry_offset as usize) < PROLOGUE_LEN || p.entry_offset > p.used {
        return Err(HsperfError::Prologue(
            "entry offset outside the used region",
        ));
    }
    Ok(p)
}

/// Iterator over the entries of a validated buffer; yields at most one error, then stops.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    buf: &'a [u8],
    big: bool,
    end: usize,
    offset: usize,
    index: u32,
    count: u32,
    failed: bool,
}

impl<'a> Entries<'a> {
    /// Offset where the next entry would start; after a full walk, where the walk ended.
    pub fn offset(&self) -> usize {
        self.offset
    }

    fn decode(&self) -> Result<(Entry<'a>, usize), &'static str> {
        let (buf, big, start) = (self.buf, self.big, self.offset);
        if start
            .checked_add(ENTRY_HEADER_LEN)
            .is_none_or(|e| e > self.end)
        {
            return Err("header runs past the used region");
        }
        let u32_at = |rel: usize| rd_u32(buf, start + rel, big).map(|v| v as usize);
        let length = u32_at(0).ok_or("unreadable length")?;
        let name_offset = u32_at(4).ok_or("unreadable name offset")?;
        let vector_length = u32_at(8).ok_or("unreadable vector length")?;
        let data_type = buf[start + 12];
        let data_offset = u32_at(16).ok_or("unreadable data offset")?;
        if length < ENTRY_HEADER_LEN {
            return Err("entry shorter than its header");
        }
        let entry_end = start.checked_add(length).ok_or("length overflows")?;
        if entry_end > self.end {
            return Err("entry runs past the used region");
        }
        let entry = &buf[start..entry_end];
        if name_offset < ENTRY_HEADER_LEN || name_offset >= length {
            return Err("name outside the entry");
        }
        if data_offset < ENTRY_HEADER_LEN || data_offset > length {
            return Err("data outside the entry");
        }
        // The name ends at its NUL, which must come before the data (or the entry end).
        let name_limit = if data_offset > name_offset {
            data_offset
        } else {
            length
        };
        let name_bytes = &entry[name_offset..name_limit];
        let nul = name_bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or("name not NUL-terminated")?;
        let name = std::str::from_utf8(&name_bytes[..nul]).map_err(|_| "name is not UTF-8")?;
        let value = match (data_type, vector_length) {
            (b'J', 0) => {
                Value::Long(rd_i64(entry, data_offset, big).ok_or("long runs past the entry")?)
            }
            (b'B', n) if n > 0 => {
                let data = entry
                    .get(data_offset..data_offset.checked_add(n).ok_or("vector overflows")?)
                    .ok_or("vector runs past the entry")?;
                let nul = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                Value::Bytes(&data[..nul])
            }
            (other, _) => Value::Other(other),
        };
        Ok((Entry { name, value }, entry_end))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, HsperfError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        match self.decode() {
            Ok((entry, next)) => {
                self.offset = next;
                self.index += 1;
                Some(Ok(entry))
            }
            Err(reason) => {
                self.failed = true;
                Some(Err(HsperfError::Entry {
                    index: self.index,
                    offset: self.offset,
                    reason,
                }))
            }
        }
    }
}

/// Validates the prologue and returns an iterator over the entries.
pub fn entries(buf: &[u8]) -> Result<Entries<'_>, HsperfError> {
    let p = prologue(buf)?;
    Ok(Entries {
        buf,
        big: p.big_endian,
        end: p.used as usize,
        offset: p.entry_offset as usize,
        index: 0,
        count: p.num_entries,
        failed: false,
    })
}

/// A heap space (`sun.gc.generation.<g>.space.<s>.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Space {
    /// `eden`, `s0`, `s1`, `old`, `space`.
    pub name: Option<String>,
    /// Bytes used.
    pub used: Option<i64>,
    /// Bytes committed.
    pub capacity: Option<i64>,
    /// Maximum bytes.
    pub max_capacity: Option<i64>,
    /// Initial bytes.
    pub init_capacity: Option<i64>,
}

/// A heap generation (`sun.gc.generation.<g>.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    /// `new`, `young`, `old`.
    pub name: Option<String>,
    /// Bytes committed.
    pub capacity: Option<i64>,
    /// Maximum bytes.
    pub max_capacity: Option<i64>,
    /// Minimum bytes.
    pub min_capacity: Option<i64>,
    /// Spaces by index.
    pub spaces: Vec<Space>,
}

/// A garbage collector (`sun.gc.collector.<n>.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collector {
    /// Collector name.
    pub name: Option<String>,
    /// Number of collections.
    pub invocations: Option<i64>,
    /// hrt ticks when the last collection ended.
    pub last_exit_ticks: Option<i64>,
}

/// A metaspace-like pool (`sun.gc.metaspace.*`, `sun.gc.compressedclassspace.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pool {
    /// Bytes used, as of the last GC.
    pub used: Option<i64>,
    /// Bytes committed, as of the last GC.
    pub capacity: Option<i64>,
    /// Bytes reserved (not the `MaxMetaspaceSize` limit).
    pub max_capacity: Option<i64>,
}

/// The counters the agent needs, picked out of one walk over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerfSnapshot {
    /// `java.property.java.version`.
    pub java_version: Option<String>,
    /// `java.property.java.home`.
    pub java_home: Option<String>,
    /// `sun.rt.javaCommand`: main class and arguments (may hold secrets; never exported).
    pub java_command: Option<String>,
    /// `java.rt.vmArgs`: JVM options (may hold secrets; never exported).
    pub vm_args: Option<String>,
    /// `sun.rt.jvmCapabilities`: first character `1` means dynamic attach is supported.
    pub jvm_capabilities: Option<String>,
    /// `sun.gc.policy.name` (`Copy:MSC`, `ParScav:MSC`, `GarbageFirst`; absent for Z/Shenandoah).
    pub gc_policy: Option<String>,
    /// `sun.os.hrt.ticks`, re-sampled by the JVM every 50 ms.
    pub hrt_ticks: Option<i64>,
    /// `sun.os.hrt.frequency` (ticks per second).
    pub hrt_frequency: Option<i64>,
    /// `sun.rt.createVmBeginTime`, epoch ms.
    pub create_vm_begin_ms: Option<i64>,
    /// `sun.rt.vmInitDoneTime`, epoch ms: the `RuntimeMXBean.getStartTime()` value.
    pub vm_init_done_ms: Option<i64>,
    /// `java.cls.loadedClasses` (excludes CDS-shared classes).
    pub loaded_classes: Option<i64>,
    /// `java.cls.unloadedClasses`.
    pub unloaded_classes: Option<i64>,
    /// `java.cls.sharedLoadedClasses`.
    pub shared_loaded_classes: Option<i64>,
    /// `java.cls.sharedUnloadedClasses`.
    pub shared_unloaded_classes: Option<i64>,
    /// `sun.gc.metaspace.*` (whole metaspace, class space included).
    pub metaspace: Pool,
    /// `sun.gc.compressedclassspace.*`.
    pub class_space: Pool,
    /// Heap generations by index.
    pub generations: Vec<Generation>,
    /// Collectors by index.
    pub collectors: Vec<Collector>,
}

impl PerfSnapshot {
    /// Total collections over all collectors.
    pub fn gc_invocations(&self) -> i64 {
        self.collectors
            .iter()
            .filter_map(|c| c.invocations)
            .fold(0i64, i64::saturating_add)
    }

    /// Seconds since the JVM started, from the hrt counters.
    pub fn uptime_from_ticks(&self) -> Option<f64> {
        let (t, f) = (self.hrt_ticks?, self.hrt_frequency?);
        (f > 0 && t >= 0).then(|| t as f64 / f as f64)
    }

    /// Dynamic attach supported according to `sun.rt.jvmCapabilities` (None if absent).
    pub fn attach_supported(&self) -> Option<bool> {
        self.jvm_capabilities
            .as_deref()
            .and_then(|c| c.chars().next())
            .map(|c| c == '1')
    }

    fn set(&mut self, name: &str, value: Value<'_>) {
        let long = value.as_long();
        let string = || value.as_str().map(str::to_owned);
        match name {
            "java.property.java.version" => self.java_version = string(),
            "java.property.java.home" => self.java_home = string(),
            "sun.rt.javaCommand" => self.java_command = string(),
            "java.rt.vmArgs" => self.vm_args = string(),
            "sun.rt.jvmCapabilities" => self.jvm_capabilities = string(),
            "sun.gc.policy.name" => self.gc_policy = string(),
            "sun.os.hrt.ticks" => self.hrt_ticks = long,
            "sun.os.hrt.frequency" => self.hrt_frequency = long,
            "sun.rt.createVmBeginTime" => self.create_vm_begin_ms = long,
            "sun.rt.vmInitDoneTime" => self.vm_init_done_ms = long,
            "java.cls.loadedClasses" => self.loaded_classes = long,
            "java.cls.unloadedClasses" => self.unloaded_classes = long,
            "java.cls.sharedLoadedClasses" => self.shared_loaded_classes = long,
            "java.cls.sharedUnloadedClasses" => self.shared_unloaded_classes = long,
            _ => {
                if let Some(rest) = name.strip_prefix("sun.gc.") {
                    self.set_gc(rest, value);
                }
            }
        }
    }

    fn set_gc(&mut self, rest: &str, value: Value<'_>) {
        let long = value.as_long();
        if let Some(field) = rest.strip_prefix("metaspace.") {
            set_pool(&mut self.metaspace, field, long);
        } else if let Some(field) = rest.strip_prefix("compressedclassspace.") {
            set_pool(&mut self.class_space, field, long);
        } else if let Some(rest) = rest.strip_prefix("generation.") {
            let Some((g, field)) = split_index(rest) else {
                return;
            };
            let generation = slot(&mut self.generations, g);
            if let Some(rest) = field.strip_prefix("space.") {
                let Some((s, field)) = split_index(rest) else {
                    return;
                };
                let space = slot(&mut generation.spaces, s);
                match field {
                    "name" => space.name = value.as_str().map(str::to_owned),
                    "used" => space.used = long,
                    "capacity" => space.capacity = long,
                    "maxCapacity" => space.max_capacity = long,
                    "initCapacity" => space.init_capacity = long,
                    _ => {}
                }
            } else {
                match field {
                    "name" => generation.name = value.as_str().map(str::to_owned),
                    "capacity" => generation.capacity = long,
                    "maxCapacity" => generation.max_capacity = long,
                    "minCapacity" => generation.min_capacity = long,
                    _ => {}
                }
            }
        } else if let Some(rest) = rest.strip_prefix("collector.") {
            let Some((n, field)) = split_index(rest) else {
                return;
            };
            let collector = slot(&mut self.collectors, n);
            match field {
                "name" => collector.name = value.as_str().map(str::to_owned),
                "invocations" => collector.invocations = long,
                "lastExitTime" => collector.last_exit_ticks = long,
                _ => {}
            }
        }
    }
}

fn set_pool(pool: &mut Pool, field: &str, v: Option<i64>) {
    match field {
        "used" => pool.used = v,
        "capacity" => pool.capacity = v,
        "maxCapacity" => pool.max_capacity = v,
        _ => {}
    }
}

/// `"3.used"` → `(3, "used")`, for indices below [`MAX_INDEX`].
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (idx, rest) = s.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    (idx < MAX_INDEX).then_some((idx, rest))
}

fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

/// Parses a whole perf-data buffer into the counters the agent uses.
///
/// Fails on any structural corruption rather than returning a partial picture, because a
/// half-read file can mix counters of two different states.
pub fn parse(buf: &[u8]) -> Result<PerfSnapshot, HsperfError> {
    let mut snap = PerfSnapshot::default();
    for entry in entries(buf)? {
        let entry = entry?;
        snap.set(entry.name, entry.value);
    }
    Ok(snap)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a little-endian perf-data buffer from `(name, value)` pairs, laid out like
    /// HotSpot does (8-byte aligned data).
    pub(crate) fn build(entries: &[(&str, Value<'_>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, value) in entries {
            let name_off = ENTRY_HEADER_LEN;
            let name_end = name_off + name.len() + 1;
            let data_off = name_end.div_ceil(8) * 8;
            let (ty, vlen, data): (u8, usize, Vec<u8>) = match value {
                Value::Long(v) => (b'J', 0, v.to_le_bytes().to_vec()),
                Value::Bytes(b) => {
                    let mut d = b.to_vec();
                    d.push(0);
                    (b'B', d.len(), d)
                }
                Value::Other(t) => (*t, 0, vec![0; 8]),
            };
            let len = (data_off + data.len()).div_ceil(8) * 8;
            let mut e = vec![0u8; len];
            e[0..4].copy_from_slice(&(len as u32).to_le_bytes());
            e[4..8].copy_from_slice(&(name_off as u32).to_le_bytes());
            e[8..12].copy_from_slice(&(vlen as u32).to_le_bytes());
            e[12] = ty;
            e[13] = 0;
            e[14] = 1;
            e[15] = 1;
            e[16..20].copy_from_slice(&(data_off as u32).to_le_bytes());
            e[name_off..name_off + name.len()].copy_from_slice(name.as_bytes());
            e[data_off..data_off + data.len()].copy_from_slice(&data);
            body.extend_from_slice(&e);
        }
        let used = PROLOGUE_LEN + body.len();
        let mut buf = vec![0u8; PROLOGUE_LEN];
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4] = 1;
        buf[5] = 2;
        buf[6] = 0;
        buf[7] = 1;
        buf[8..12].copy_from_slice(&(used as u32).to_le_bytes());
        buf[24..28].copy_from_slice(&(PROLOGUE_LEN as u32).to_le_bytes());
        buf[28..32].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        buf.extend_from_slice(&body);
        // HotSpot's region is larger than `used`; the tail is zero.
        buf.resize(used + 64, 0);
        buf
    }

    pub(crate) fn sample() -> Vec<u8> {
        build(&[
            ("java.property.java.version", Value::Bytes(b"17.0.15")),
            (
                "java.property.java.home",
                Value::Bytes(b"/usr/lib/jvm/java-17"),
            ),
            ("sun.rt.javaCommand", Value::Bytes(b"Main 1")),
            (
                "java.rt.vmArgs",
                Value::Bytes(b"-Xmx64m -XX:MaxMetaspaceSize=64m"),
            ),
            ("sun.rt.jvmCapabilities", Value::Bytes(b"1100")),
            ("sun.gc.policy.name", Value::Bytes(b"Copy:MSC")),
            ("sun.os.hrt.ticks", Value::Long(2_500_000_000)),
            ("sun.os.hrt.frequency", Value::Long(1_000_000_000)),
            ("java.cls.loadedClasses", Value::Long(100)),
            ("java.cls.sharedLoadedClasses", Value::Long(600)),
            ("java.cls.unloadedClasses", Value::Long(3)),
            ("java.cls.sharedUnloadedClasses", Value::Long(0)),
            ("sun.gc.metaspace.used", Value::Long(1000)),
            ("sun.gc.metaspace.capacity", Value::Long(4096)),
            ("sun.gc.generation.1.space.0.used", Value::Long(7)),
            ("sun.gc.generation.0.capacity", Value::Long(300)),
            ("sun.gc.collector.1.invocations", Value::Long(2)),
            ("sun.gc.collector.0.invocations", Value::Long(5)),
            ("sun.gc.generation.99.capacity", Value::Long(1)),
            ("sun.ci.unknownType", Value::Other(b'C')),
        ])
    }

    #[test]
    fn parses_a_synthetic_file() {
        let buf = sample();
        let s = parse(&buf).unwrap();
        assert_eq!(s.java_version.as_deref(), Some("17.0.15"));
        assert_eq!(s.java_command.as_deref(), Some("Main 1"));
        assert_eq!(s.attach_supported(), Some(true));
        assert_eq!(s.uptime_from_ticks(), Some(2.5));
        assert_eq!(s.loaded_classes, Some(100));
        assert_eq!(s.metaspace.capacity, Some(4096));
        assert_eq!(s.generations.len(), 2);
        assert_eq!(s.generations[1].spaces[0].used, Some(7));
        assert_eq!(s.generations[0].capacity, Some(300));
        assert_eq!(s.gc_invocations(), 7);
    }

    #[test]
    fn walk_ends_exactly_at_used() {
        let buf = sample();
        let p = prologue(&buf).unwrap();
        let mut it = entries(&buf).unwrap();
        assert_eq!(
            it.by_ref().filter(Result::is_ok).count(),
            p.num_entries as usize
        );
        assert_eq!(it.offset(), p.used as usize);
    }

    #[test]
    fn big_endian_files_decode() {
        // Convert the little-endian sample field by field.
        let le = build(&[("sun.os.hrt.frequency", Value::Long(1_000_000_000))]);
        let mut be = le.clone();
        be[4] = 0;
        for at in [8usize, 12, 24, 28] {
            let v = u32::from_le_bytes(le[at..at + 4].try_into().unwrap());
            be[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        let e = PROLOGUE_LEN;
        for rel in [0usize, 4, 8, 16] {
            let v = u32::from_le_bytes(le[e + rel..e + rel + 4].try_into().unwrap());
            be[e + rel..e + rel + 4].copy_from_slice(&v.to_be_bytes());
        }
        let data = e + u32::from_le_bytes(le[e + 16..e + 20].try_into().unwrap()) as usize;
        be[data..data + 8].copy_from_slice(&1_000_000_000i64.to_be_bytes());
        assert_eq!(parse(&be).unwrap().hrt_frequency, Some(1_000_000_000));
    }

    #[test]
    fn rejections() {
        let good = sample();
        type Case = (Vec<u8>, fn(&HsperfError) -> bool);
        let cases: Vec<Case> = vec![
            (good[..10].to_vec(), |e| {
                matches!(e, HsperfError::TooShort(10))
            }),
            (
                {
                    let mut b = good.clone();
                    b[0] = 0;
                    b
                },
                |e| matches!(e, HsperfError::BadMagic(_)),
            ),
            (
                {
                    let mut b = good.clone();
                    b[4] = 7;
                    b
                },
                |e| matches!(e, HsperfError::ByteOrder(7)),
            ),
            (
                {
                    let mut b = good.clone();
                    b[5] = 1;
                    b
                },
                |e| matches!(e, HsperfError::Version { major: 1, .. }),
            ),
            (
                {
                    let mut b = good.clone();
                    b[7] = 0;
                    b
                },
                |e| matches!(e, HsperfError::NotAccessible),
            ),
            // Truncated below `used`.
            (good[..200].to_vec(), |e| {
                matches!(e, HsperfError::Prologue(_))
            }),
            // Entry offset pointing into the prologue.
            (
                {
                    let mut b = good.clone();
                    b[24] = 4;
                    b
                },
                |e| matches!(e, HsperfError::Prologue(_)),
            ),
            // More entries claimed than present: the walk hits the zero tail.
            (
                {
                    let mut b = good.clone();
                    b[28] = 200;
                    b
                },
                |e| matches!(e, HsperfError::Entry { .. }),
            ),
            // First entry's length zero.
            (
                {
                    let mut b = good.clone();
                    b[32..36].fill(0);
                    b
                },
                |e| matches!(e, HsperfError::Entry { index: 0, .. }),
            ),
            // First entry's name offset outside it.
            (
                {
                    let mut b = good.clone();
                    b[36..40].fill(0xff);
                    b
                },
                |e| matches!(e, HsperfError::Entry { .. }),
            ),
            // First entry's data offset outside it.
            (
                {
                    let mut b = good.clone();
                    b[48..52].fill(0xff);
                    b
                },
                |e| matches!(e, HsperfError::Entry { .. }),
            ),
        ];
        for (i, (buf, check)) in cases.iter().enumerate() {
            let err = parse(buf).unwrap_err();
            assert!(check(&err), "case {i}: unexpected {err:?}");
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Walks everything a buffer offers, the way the sampler does.
        fn exercise(buf: &[u8]) {
            let _ = parse(buf);
            if let Ok(it) = entries(buf) {
                for e in it.flatten() {
                    let _ = (e.value.as_long(), e.value.as_str());
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..4096)) {
                exercise(&buf);
            }

            #[test]
            fn arbitrary_entries_behind_a_valid_prologue(body in proptest::collection::vec(any::<u8>(), 0..4096), n in 0u32..400, big in any::<bool>()) {
                let mut buf = vec![0u8; PROLOGUE_LEN];
                buf[..4].copy_from_slice(&MAGIC);
                buf[4] = u8::from(!big);
                buf[5] = 2;
                buf[7] = 1;
                let used = (PROLOGUE_LEN + body.len()) as u32;
                let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
                put(&mut buf, 8, used);
                put(&mut buf, 24, PROLOGUE_LEN as u32);
                put(&mut buf, 28, n);
                buf.extend_from_slice(&body);
                exercise(&buf);
            }

            #[test]
            fn mutated_files_never_panic(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut buf = sample();
                for (at, byte) in edits {
                    let i = at.index(buf.len());
                    buf[i] = byte;
                }
                if truncate {
                    buf.truncate(cut.index(buf.len()));
                }
                exercise(&buf);
            }

            #[test]
            fn every_truncation_of_a_good_file_is_an_error_or_complete(cut in any::<prop::sample::Index>()) {
                let full = sample();
                let used = prologue(&full).unwrap().used as usize;
                let at = cut.index(full.len());
                let r = parse(&full[..at]);
                // Cut inside the used region: the prologue no longer fits the buffer.
                prop_assert_eq!(r.is_ok(), at >= used);
            }
        }
    }
}
