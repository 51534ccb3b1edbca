//! The stored form of a [`Traffic`]: a bit mask of the counters that are not zero, then those
//! counters, every number a LEB128 varint. Most of the 28 counters of a row are zero (a series
//! answers in a few latency buckets and status classes) and the others are small, so a busy
//! series' row takes about 20 bytes rather than 224. Equal traffic packs to equal bytes, so
//! buckets compare by their bytes; [`unpack`] refuses any other spelling.

use super::{LATENCY_BUCKETS, Traffic};

/// Counters in a [`Traffic`].
const FIELDS: usize = 4 + 5 + LATENCY_BUCKETS;

/// Why packed bytes were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum PackError {
    /// The bytes end inside a row.
    #[error("packed traffic ends early")]
    Truncated,
    /// A varint past 64 bits, or longer than its value needs.
    #[error("packed traffic has a varint past 64 bits or longer than needed")]
    Varint,
    /// The mask names a counter that does not exist, or a counter named is zero.
    #[error("packed traffic marks a counter that does not exist or is zero")]
    Field,
}

/// The counters in packing order: those in use in nearly every row first, so that a typical
/// row's mask ends in its first two bytes.
fn fields(traffic: &Traffic) -> [u64; FIELDS] {
    let Traffic {
        requests,
        status,
        latency,
        latency_sum_us,
        bytes_in,
        bytes_out,
    } = traffic;
    let mut fields = [0; FIELDS];
    fields[..4].copy_from_slice(&[*requests, *latency_sum_us, *bytes_in, *bytes_out]);
    fields[4..9].copy_from_slice(status);
    fields[9..].copy_from_slice(latency);
    fields
}

fn from_fields(fields: &[u64; FIELDS]) -> Traffic {
    let mut status = [0; 5];
    status.copy_from_slice(&fields[4..9]);
    let mut latency = [0; LATENCY_BUCKETS];
    latency.copy_from_slice(&fields[9..]);
    Traffic {
        requests: fields[0],
        status,
        latency,
        latency_sum_us: fields[1],
        bytes_in: fields[2],
        bytes_out: fields[3],
    }
}

/// Appends `traffic` to `out`.
pub(super) fn pack(traffic: &Traffic, out: &mut Vec<u8>) {
    let fields = fields(traffic);
    let mask = fields
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0)
        .fold(0u64, |mask, (i, _)| mask | 1 << i);
    put(out, mask);
    for v in fields.into_iter().filter(|v| *v != 0) {
        put(out, v);
    }
}

/// One packed row, as [`split`] found it: unpacked only when read, so that a query pays for
/// the rows it selects, and only finds the end of the others.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row<'a>(&'a [u8]);

impl Row<'_> {
    /// What the row holds. Rows are split from counters that [`pack`] wrote or [`unpack`]
    /// checked, so they unpack; were one not to, it would read as no traffic.
    pub(super) fn traffic(self) -> Traffic {
        unpack(&mut &self.0[..]).unwrap_or_default()
    }
}

/// Takes the first row off `input`, unchecked but for its length; `None` when it ends early.
pub(super) fn split<'a>(input: &mut &'a [u8]) -> Option<Row<'a>> {
    let all = *input;
    let mask = take(input).ok()?;
    for _ in 0..mask.count_ones() {
        let end = input.iter().position(|byte| byte & 0x80 == 0)?;
        *input = &input[end + 1..];
    }
    Some(Row(&all[..all.len() - input.len()]))
}

/// Takes one traffic off the front of `input`.
pub(super) fn unpack(input: &mut &[u8]) -> Result<Traffic, PackError> {
    let mask = take(input)?;
    if mask >> FIELDS != 0 {
        return Err(PackError::Field);
    }
    let mut fields = [0; FIELDS];
    let mut left = mask;
    while left != 0 {
        let v = take(input)?;
        if v == 0 {
            return Err(PackError::Field);
        }
        fields[left.trailing_zeros() as usize] = v;
        left &= left - 1;
    }
    Ok(from_fields(&fields))
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take(input: &mut &[u8]) -> Result<u64, PackError> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let (&byte, rest) = input.split_first().ok_or(PackError::Truncated)?;
        *input = rest;
        // The tenth byte holds only the 64th bit (and so ends the varint).
        if shift == 63 && byte > 1 {
            return Err(PackError::Varint);
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            // A last byte of zero after others spells a shorter varint the long way.
            return if byte == 0 && shift > 0 {
                Err(PackError::Varint)
            } else {
                Ok(v)
            };
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(traffic: &Traffic) -> usize {
        let mut bytes = Vec::new();
        pack(traffic, &mut bytes);
        let mut input = &bytes[..];
        assert_eq!(unpack(&mut input).as_ref(), Ok(traffic));
        assert!(input.is_empty());
        bytes.len()
    }

    #[test]
    fn zeros_small_and_huge_counts_roundtrip() {
        assert_eq!(roundtrip(&Traffic::default()), 1);
        let mut busy = Traffic {
            requests: 1000,
            latency_sum_us: 1_500_000,
            bytes_in: 10_000,
            bytes_out: 1_000_000,
            ..Traffic::default()
        };
        busy.status = [0, 990, 0, 0, 10];
        busy.latency[3] = 600;
        busy.latency[4] = 400;
        assert_eq!(roundtrip(&busy), 19);
        let max = Traffic {
            requests: u64::MAX,
            status: [u64::MAX; 5],
            latency: [u64::MAX; LATENCY_BUCKETS],
            latency_sum_us: u64::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
        };
        assert_eq!(roundtrip(&max), 4 + FIELDS * 10);
        let mut sparse = Traffic {
            requests: u64::MAX - 1,
            bytes_out: 1 << 63,
            ..Traffic::default()
        };
        sparse.latency[LATENCY_BUCKETS - 1] = 0x7f;
        sparse.status[0] = 0x80;
        roundtrip(&sparse);
        // Rows one after another, as a bucket holds them.
        let mut bytes = Vec::new();
        for t in [&max, &Traffic::default(), &sparse] {
            pack(t, &mut bytes);
        }
        let mut input = &bytes[..];
        for t in [&max, &Traffic::default(), &sparse] {
            assert_eq!(unpack(&mut input).as_ref(), Ok(t));
        }
        assert!(input.is_empty());
        let mut input = &bytes[..];
        for t in [&max, &Traffic::default(), &sparse] {
            assert_eq!(split(&mut input).map(Row::traffic).as_ref(), Some(t));
        }
        assert!(input.is_empty());
    }

    #[test]
    fn other_spellings_are_refused() {
        let refused = |bytes: &[u8]| unpack(&mut &bytes[..]).err();
        assert_eq!(refused(&[]), Some(PackError::Truncated));
        assert_eq!(refused(&[1]), Some(PackError::Truncated));
        assert_eq!(refused(&[0x81]), Some(PackError::Truncated));
        // A zero mask spelt in two bytes; a counter of zero.
        assert_eq!(refused(&[0x80, 0]), Some(PackError::Varint));
        assert_eq!(refused(&[1, 0]), Some(PackError::Field));
        // A counter past the last.
        let mut past = Vec::new();
        put(&mut past, 1 << FIELDS);
        past.push(1);
        assert_eq!(refused(&past), Some(PackError::Field));
        // 2^64, and eleven bytes.
        let mut big = vec![1];
        big.extend([0xff; 9]);
        big.push(0x02);
        assert_eq!(refused(&big), Some(PackError::Varint));
        let mut long = vec![1];
        long.extend([0x80; 10]);
        long.push(0x01);
        assert_eq!(refused(&long), Some(PackError::Varint));
        // Every cut of a valid row.
        let mut bytes = Vec::new();
        pack(
            &Traffic {
                requests: u64::MAX,
                bytes_out: 300,
                ..Traffic::default()
            },
            &mut bytes,
        );
        for cut in 0..bytes.len() {
            assert_eq!(refused(&bytes[..cut]), Some(PackError::Truncated));
            assert!(split(&mut &bytes[..cut]).is_none());
        }
    }
}
