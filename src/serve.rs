//! Glue between an archive and the filesystem core: the tree the mount shows, and file
//! contents from the frame source.

use crate::archive::{Archive, EntryKind};
use crate::frames::source::FrameSource;
use crate::frames::FrameError;
use crate::fs::{ContentError, ContentSource, NodeKind, NodeSpec};
use crate::unpack::to_system_time;

/// The mount's tree: exactly the archive's entries, with the sizes the index records. A hard
/// link takes its file's content id, which makes it another name of that file.
pub fn nodes(archive: &Archive) -> Vec<NodeSpec> {
    let link_of: std::collections::HashMap<usize, usize> =
        archive.index.links.iter().copied().collect();
    archive
        .index
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| NodeSpec {
            path: e.path.clone(),
            kind: match &e.kind {
                // A decoded index holds no copies or links (they take their original's kind).
                EntryKind::Dir | EntryKind::Copy { .. } | EntryKind::Link { .. } => NodeKind::Dir,
                EntryKind::Symlink { target } => NodeKind::Symlink(target.clone()),
                EntryKind::Verbatim { .. } | EntryKind::Image(_) => NodeKind::File,
            },
            mtime: to_system_time(e.mtime),
            size: e.served_size(),
            id: link_of.get(&i).copied().unwrap_or(i),
        })
        .collect()
}

impl ContentSource for FrameSource {
    fn read(&self, id: usize, offset: u64, size: u32) -> Result<Vec<u8>, ContentError> {
        FrameSource::read(self, id, offset, size as usize).map_err(|e| match e {
            FrameError::Read(crate::archive::ReadError::Io(io)) => ContentError::Io(io),
            other => ContentError::Damaged(other.to_string()),
        })
    }
}
