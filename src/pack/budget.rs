//! What a GOP's frames must beat to be kept as video: the album files as the archive would
//! keep them, measured only when the answer depends on it.

use super::*;

/// What a GOP's coding must beat: keeping its files as the archive would keep them, JPEG files
/// Lepton-compressed, PNG files recoded (`pngz`), the rest as they are. Recoded sizes cost
/// about as much time as coding, so they are measured only when the answer depends on them.
pub(super) struct Budget {
    /// Metadata stored beside the frames, and the alpha track's bytes.
    pub(super) overhead: u64,
    /// The files' own sizes (shares of them for tiles).
    pub(super) raw: u64,
    /// The part of `raw` that is JPEG files.
    pub(super) jpeg: u64,
    /// The least share of its size a JPEG file can be kept in ([`jpeg_floor`]).
    pub(super) jpeg_floor: (u64, u64),
    /// The part of `raw` that is PNG files.
    pub(super) png: u64,
    /// `raw` with the JPEG and PNG files at their recoded size, once measured.
    pub(super) exact: Option<u64>,
    /// A floor of `exact` with the PNG files at their drafts' size, once made.
    pub(super) drafts: Option<u64>,
}

impl Budget {
    /// What keeping the files takes, when that is no more than `coded` bytes of frames (plus
    /// the overhead); `None` when coding is smaller. `measure` gives the exact size (JPEGs and
    /// PNGs at their recoded size), called only when the files' own size, the JPEGs' floor
    /// ([`jpeg_floor`]) and nothing of the PNGs' do not decide, nor the PNGs' drafts (`drafts`,
    /// which spare the zlib settings search, most of a PNG's measuring), and remembered in
    /// `exact`.
    pub(super) fn beats(
        &mut self,
        coded: u64,
        mut measure: impl FnMut(Measure) -> u64,
    ) -> Option<u64> {
        let total = coded.saturating_add(self.overhead);
        if total >= self.raw {
            return Some(self.raw);
        }
        // A PNG of text or a user interface recodes to a fifth of its size or less: no
        // floor is safe for PNGs but their drafts.
        let floor =
            self.raw - self.jpeg - self.png + self.jpeg * self.jpeg_floor.0 / self.jpeg_floor.1;
        if total < floor {
            return None;
        }
        if self.png > 0
            && self.exact.is_none()
            && total < *self.drafts.get_or_insert_with(|| measure(Measure::Drafts))
        {
            return None;
        }
        let exact = *self.exact.get_or_insert_with(|| measure(Measure::Exact));
        (total >= exact).then_some(exact)
    }
}

/// What [`Budget::beats`] asks to be measured.
pub(super) enum Measure {
    /// The files with PNGs at their drafts' size and JPEGs at their floor ([`jpeg_floor`]).
    Drafts,
    /// The files as the archive would keep them.
    Exact,
}

/// A tile of a huge image weighs its share (by area) of `bytes`, a size of the whole file.
pub(super) fn tile_share(r: &Ready, bytes: u64) -> u64 {
    let t = r.tile;
    let area = u128::from(t.width) * u128::from(t.height);
    let whole = (u128::from(r.entry.width) * u128::from(r.entry.height)).max(1);
    (u128::from(bytes) * area / whole) as u64
}

/// Lepton shrinks a JPEG file by 17 to 29 % on the corpora measured; coding that beats
/// this fraction of the JPEG files' size wins without measuring them.
pub(super) const LEPTON_FLOOR: (u64, u64) = (3, 5);

/// Recoded in its own DCT, a JPEG can take less again (burst frames at 90: half their size;
/// at lower targets less): below this fraction coding wins without measuring.
pub(super) const THINNED_FLOOR: (u64, u64) = (1, 5);

/// The fraction of a JPEG file's size below which coding wins without measuring what keeping
/// it takes.
pub(super) fn jpeg_floor(opts: &PackOptions) -> (u64, u64) {
    if opts.thin_target().is_some() {
        THINNED_FLOOR
    } else {
        LEPTON_FLOOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget nothing has been measured for yet.
    fn budget(overhead: u64, raw: u64, jpeg: u64, png: u64) -> Budget {
        Budget {
            overhead,
            raw,
            jpeg,
            jpeg_floor: LEPTON_FLOOR,
            png,
            exact: None,
            drafts: None,
        }
    }

    #[test]
    fn lepton_is_measured_only_when_it_decides() {
        // 1,000 bytes of files, 800 of them JPEG, 50 of metadata beside the frames.
        let mut b = budget(50, 1000, 800, 0);
        let never = |_: Measure| -> u64 { panic!("measured although the sizes decide") };
        // Frames plus overhead at least the files' own size: keep the files.
        assert_eq!(b.beats(950, never), Some(1000));
        // Below 200 + 3/5 of 800 = 680: coding wins whatever Lepton gives.
        assert_eq!(b.beats(629, never), None);
        assert_eq!(b.exact, None);
        // In between, the Lepton size decides, measured once and remembered.
        assert_eq!(b.beats(700, |_| 760), None);
        assert_eq!(b.exact, Some(760));
        assert_eq!(b.beats(710, never), Some(760));
        // No JPEG: the files' own size is exact.
        let mut png = budget(0, 1000, 0, 0);
        assert_eq!(png.beats(999, never), None);
        assert_eq!(png.beats(1000, never), Some(1000));
        // PNG files: any coding below their own size is measured against their recoded size.
        let mut png = budget(0, 1000, 0, 1000);
        assert_eq!(png.beats(1000, never), Some(1000));
        let sizes = |m: Measure| match m {
            Measure::Drafts => 300,
            Measure::Exact => 300,
        };
        assert_eq!(png.beats(400, sizes), Some(300));
        assert_eq!(png.beats(200, never), None);
        // Coding below the PNGs' drafts wins without the zlib settings search; above them the
        // recoded size (the drafts settled, or the files where no setting is found) decides.
        let mut png = budget(0, 1000, 0, 1000);
        let drafts_only = |m: Measure| match m {
            Measure::Drafts => 300,
            Measure::Exact => panic!("searched although the drafts decide"),
        };
        assert_eq!(png.beats(250, drafts_only), None);
        assert_eq!(png.drafts, Some(300));
        assert_eq!(png.beats(280, never), None);
        let settled = |m: Measure| match m {
            Measure::Drafts => panic!("drafts made twice"),
            Measure::Exact => 1000,
        };
        assert_eq!(png.beats(350, settled), None);
        assert_eq!(png.exact, Some(1000));
    }
}
