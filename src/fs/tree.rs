//! Building the immutable inode table from a list of [`NodeSpec`]s.
//!
//! Inode numbers are the position of a node in the depth-first, name-sorted
//! order of all paths (explicit and implicit), plus one: the root is 1, and
//! the same node list always yields the same numbers.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{display_path, FsError, NodeKind, NodeSpec, NAME_MAX};

/// Longest symlink target the kernel can return from `readlink` (PAGE_SIZE - 1).
const SYMLINK_MAX: usize = 4095;

/// One node of the table. Its inode number is its index + 1.
#[derive(Debug)]
pub(super) struct Node {
    /// Full relative path (no leading '/'); empty for the root.
    pub(super) path: Box<[u8]>,
    /// Where the last component starts in `path`.
    name_start: usize,
    /// Index of the parent directory (the root is its own parent).
    pub(super) parent: u32,
    /// mtime (also atime and ctime).
    pub(super) mtime: SystemTime,
    /// What the node is.
    pub(super) kind: Kind,
}

impl Node {
    /// The last path component (empty for the root).
    pub(super) fn name(&self) -> &[u8] {
        &self.path[self.name_start..]
    }
}

/// Node payload.
#[derive(Debug)]
pub(super) enum Kind {
    /// A directory; `children` are node indexes sorted by name bytes.
    Dir { children: Vec<u32>, subdirs: u32 },
    /// A regular file with its content id and exact size. Files of one id are one file under
    /// several names (hard links): `first` is the node whose inode they all show, `names`
    /// how many there are (their link count).
    File {
        id: usize,
        size: u64,
        first: u32,
        names: u32,
    },
    /// A symbolic link.
    Symlink { target: Box<[u8]> },
}

/// What an explicit spec said about a path.
#[derive(Debug)]
struct Explicit {
    kind: NodeKind,
    mtime: SystemTime,
    size: u64,
    id: usize,
}

fn kind_name(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::Dir => "directory",
        NodeKind::File => "file",
        NodeKind::Symlink(_) => "symlink",
    }
}

fn invalid(path: &[u8], reason: &'static str) -> FsError {
    FsError::InvalidPath {
        path: display_path(path),
        reason,
    }
}

/// Splits and validates a relative path into its components.
fn split_path(path: &[u8]) -> Result<Vec<Vec<u8>>, FsError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if path.first() == Some(&b'/') {
        return Err(invalid(path, "leading '/' (paths must be relative)"));
    }
    path.split(|&b| b == b'/')
        .map(|comp| {
            if comp.is_empty() {
                Err(invalid(path, "empty component (double or trailing '/')"))
            } else if comp == b"." || comp == b".." {
                Err(invalid(path, "'.' or '..' component"))
            } else if comp.contains(&0) {
                Err(invalid(path, "NUL byte in name"))
            } else if comp.len() > NAME_MAX {
                Err(invalid(path, "component longer than 255 bytes"))
            } else {
                Ok(comp.to_vec())
            }
        })
        .collect()
}

fn validate_target(path: &[u8], target: &[u8]) -> Result<(), FsError> {
    if target.is_empty() {
        Err(invalid(path, "empty symlink target"))
    } else if target.contains(&0) {
        Err(invalid(path, "NUL byte in symlink target"))
    } else if target.len() > SYMLINK_MAX {
        Err(invalid(path, "symlink target longer than 4095 bytes"))
    } else {
        Ok(())
    }
}

/// Makes the files that share a content id one file under several names: each shows the
/// first one's inode, and all count their names. Names of one file must agree on its size.
fn link_names(nodes: &mut [Node]) -> Result<(), FsError> {
    // Content id -> (first node, names, size).
    let mut files: std::collections::HashMap<usize, (u32, u32, u64)> = Default::default();
    for (index, node) in nodes.iter().enumerate() {
        if let Kind::File { id, size, .. } = node.kind {
            let entry = files.entry(id).or_insert((index as u32, 0, size));
            if entry.2 != size {
                return Err(invalid(
                    &node.path,
                    "another name of a file of another size",
                ));
            }
            entry.1 += 1;
        }
    }
    for node in nodes.iter_mut() {
        if let Kind::File {
            id, first, names, ..
        } = &mut node.kind
        {
            if let Some(&(at, count, _)) = files.get(id) {
                (*first, *names) = (at, count);
            }
        }
    }
    Ok(())
}

/// Builds the node table: index 0 is the root, then depth-first by name.
pub(super) fn build(specs: Vec<NodeSpec>) -> Result<Vec<Node>, FsError> {
    // Key: path components. Lexicographic order on component vectors puts a
    // directory right before its subtree and sorts siblings by name bytes.
    // Value: None for directories that only exist implicitly.
    let mut map: BTreeMap<Vec<Vec<u8>>, Option<Explicit>> = BTreeMap::new();
    map.insert(Vec::new(), None);

    for spec in specs {
        let comps = split_path(&spec.path)?;
        match &spec.kind {
            NodeKind::Symlink(target) => validate_target(&spec.path, target)?,
            NodeKind::File => {}
            NodeKind::Dir => {}
        }
        if comps.is_empty() && spec.kind != NodeKind::Dir {
            return Err(invalid(&spec.path, "the root can only be a directory"));
        }
        for depth in 1..comps.len() {
            if !map.contains_key(&comps[..depth]) {
                map.insert(comps[..depth].to_vec(), None);
            }
        }
        let explicit = Explicit {
            kind: spec.kind,
            mtime: spec.mtime,
            size: spec.size,
            id: spec.id,
        };
        match map.get_mut(&comps) {
            Some(Some(_)) => return Err(FsError::DuplicatePath(display_path(&spec.path))),
            Some(slot) => *slot = Some(explicit),
            None => {
                map.insert(comps, Some(explicit));
            }
        }
    }

    if map.len() > u32::MAX as usize {
        return Err(FsError::TooManyNodes(map.len()));
    }

    // Every node's parent must be a directory (explicit or implicit).
    for (comps, _) in map.iter().filter(|(c, _)| c.len() > 1) {
        let parent = &comps[..comps.len() - 1];
        if let Some(Some(explicit)) = map.get(parent) {
            if explicit.kind != NodeKind::Dir {
                return Err(FsError::ParentNotDir {
                    path: display_path(&comps.join(&b'/')),
                    parent: display_path(&parent.join(&b'/')),
                    kind: kind_name(&explicit.kind),
                });
            }
        }
    }

    let mut nodes: Vec<Node> = Vec::with_capacity(map.len());
    let mut implicit: Vec<bool> = Vec::with_capacity(map.len());
    // stack[d] = index of the ancestor at depth d of the current key.
    let mut stack: Vec<u32> = Vec::new();
    for (comps, explicit) in map {
        let index = nodes.len() as u32;
        let depth = comps.len();
        stack.truncate(depth);
        let parent = stack.last().copied().unwrap_or(0);
        stack.push(index);

        let path = comps.join(&b'/').into_boxed_slice();
        let name_start = path.len() - comps.last().map_or(0, Vec::len);
        let (kind, mtime, is_implicit) = match explicit {
            None => (
                Kind::Dir {
                    children: Vec::new(),
                    subdirs: 0,
                },
                SystemTime::UNIX_EPOCH,
                true,
            ),
            Some(e) => {
                let kind = match e.kind {
                    NodeKind::Dir => Kind::Dir {
                        children: Vec::new(),
                        subdirs: 0,
                    },
                    NodeKind::File => Kind::File {
                        id: e.id,
                        size: e.size,
                        first: index,
                        names: 1,
                    },
                    NodeKind::Symlink(target) => Kind::Symlink {
                        target: target.into_boxed_slice(),
                    },
                };
                (kind, e.mtime, false)
            }
        };
        let is_dir = matches!(kind, Kind::Dir { .. });
        nodes.push(Node {
            path,
            name_start,
            parent,
            mtime,
            kind,
        });
        implicit.push(is_implicit);
        if index != 0 {
            // Siblings arrive in name order, so children stay sorted.
            if let Some(Node {
                kind: Kind::Dir { children, subdirs },
                ..
            }) = nodes.get_mut(parent as usize)
            {
                children.push(index);
                if is_dir {
                    *subdirs += 1;
                }
            }
        }
    }

    link_names(&mut nodes)?;

    // Implicit directories take the newest mtime found below them. Children
    // have larger indexes than their parent, so a reverse sweep sees every
    // subtree complete before it is folded into its parent.
    for index in (1..nodes.len()).rev() {
        let parent = nodes[index].parent as usize;
        if implicit[parent] && nodes[index].mtime > nodes[parent].mtime {
            nodes[parent].mtime = nodes[index].mtime;
        }
    }
    Ok(nodes)
}
