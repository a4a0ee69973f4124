//! Identical files in an album: found before packing, so that each content is packed once and
//! every copy's entry points at it (copies keep their own names, times and modes).
//!
//! Copies are common in real albums ("IMG_0042 (1).jpg", the same photo in two folders), and
//! a solid archiver such as 7z stores them once. Files are compared by size, then by a hash of
//! their first 64 KiB, then by a hash of the whole file, and a match is confirmed byte for
//! byte: a hash alone (xxh3 is not a cryptographic hash) could let a crafted file take another
//! one's place.

use crate::album::{Found, Item};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// Bytes hashed first: enough to tell apart most files of one size without reading them whole.
const PREFIX: u64 = 64 << 10;

/// For every item, the earlier item (in walk order) whose file has exactly the same bytes, if
/// any. A file that cannot be read is nobody's copy (packing it reports the error).
pub fn copies(items: &[Item]) -> Vec<Option<usize>> {
    let mut of = vec![None; items.len()];
    let mut by_size: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        // Empty files are not worth it: they store nothing.
        if let Found::File { size, .. } = item.found {
            if size > 0 {
                by_size.entry(size).or_default().push(i);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = by_size.into_values().filter(|g| g.len() > 1).collect();
    groups.sort_unstable();
    for group in groups {
        // Narrowed by the prefix's hash, then the whole file's.
        for same_prefix in split_by(&group, |i| hash(&items[i].abs, Some(PREFIX))) {
            for same_hash in split_by(&same_prefix, |i| hash(&items[i].abs, None)) {
                mark_copies(items, &same_hash, &mut of);
            }
        }
    }
    of
}

/// `group` split into the runs (of two or more, in their order) with the same key; items whose
/// key cannot be computed are left out.
fn split_by(group: &[usize], key: impl Fn(usize) -> io::Result<u128>) -> Vec<Vec<usize>> {
    if group.len() < 2 {
        return Vec::new();
    }
    let mut by_key: HashMap<u128, Vec<usize>> = HashMap::new();
    for &i in group {
        match key(i) {
            Ok(k) => by_key.entry(k).or_default().push(i),
            Err(e) => log::debug!("item {i}: not compared with its namesakes in size: {e}"),
        }
    }
    let mut runs: Vec<Vec<usize>> = by_key.into_values().filter(|r| r.len() > 1).collect();
    runs.sort_unstable();
    runs
}

/// Within files of one hash, each one that equals an earlier one byte for byte is its copy.
fn mark_copies(items: &[Item], same: &[usize], of: &mut [Option<usize>]) {
    let mut originals: Vec<usize> = Vec::new();
    for &i in same {
        let found = originals
            .iter()
            .copied()
            .find(|&o| same_bytes(&items[o].abs, &items[i].abs).unwrap_or(false));
        match found {
            Some(o) => of[i] = Some(o),
            None => originals.push(i),
        }
    }
}

/// xxh3-128 of the file's first `limit` bytes (all of them without a limit).
fn hash(path: &Path, limit: Option<u64>) -> io::Result<u128> {
    let f = File::open(path)?;
    let mut reader: Box<dyn Read> = match limit {
        Some(n) => Box::new(f.take(n)),
        None => Box::new(f),
    };
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(h.digest128());
        }
        h.update(&buf[..n]);
    }
}

/// Whether two files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
pub(crate) fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::album;

    #[test]
    fn copies_are_found_by_content_not_name_or_size_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("b")).unwrap();
        // Same size, same first 64 KiB, different last byte: not copies.
        let mut big = vec![7u8; 200_000];
        std::fs::write(root.join("a1.bin"), &big).unwrap();
        std::fs::write(root.join("b/a1 copy.bin"), &big).unwrap();
        big[199_999] = 8;
        std::fs::write(root.join("a2.bin"), &big).unwrap();
        // Same size, different start.
        std::fs::write(root.join("x.txt"), b"hello").unwrap();
        std::fs::write(root.join("y.txt"), b"world").unwrap();
        std::fs::write(root.join("z.txt"), b"hello").unwrap();
        // Empty files are left alone.
        std::fs::write(root.join("e1"), b"").unwrap();
        std::fs::write(root.join("e2"), b"").unwrap();
        let items = album::walk(root, &album::Exclude::nothing()).unwrap().items;
        let of = copies(&items);
        let name = |i: usize| String::from_utf8_lossy(&items[i].rel).into_owned();
        let mut found: Vec<(String, String)> = of
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.map(|o| (name(i), name(o))))
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("b/a1 copy.bin".to_string(), "a1.bin".to_string()),
                ("z.txt".to_string(), "x.txt".to_string()),
            ]
        );
    }
}
