//! Files kept as files: their stored forms (Lepton, JPEGs recoded in their own DCT, recoded
//! PNGs, zstd, as they are) and writing them into the archive.

use super::*;

/// A JPEG's kept form or a PNG's `pngz` form, made to measure it, with the xxh3-64 of the
/// file it was made from.
#[derive(Clone)]
pub(super) enum Recoded {
    /// A JPEG's Lepton form (checked only when stored): what keeping it takes, as
    /// [`jpeg_kept_form`] found, where recoding it in its own DCT gave nothing smaller or is
    /// not done.
    Lepton(Vec<u8>),
    /// A JPEG recoded in its own DCT, smaller than its Lepton form.
    Thinned(ThinnedJpeg, u64),
    Png(Vec<u8>, u64),
    /// A `pngz::draft` (the zlib settings not searched for yet).
    PngDraft(Vec<u8>, u64),
}

impl Recoded {
    pub(super) fn len(&self) -> usize {
        match self {
            Recoded::Lepton(b) | Recoded::Png(b, _) | Recoded::PngDraft(b, _) => b.len(),
            Recoded::Thinned(t, _) => t.coded.len(),
        }
    }
}

/// A JPEG recoded in its own DCT, Lepton-compressed and checked: the share of its
/// coefficients thinned, its score, and the bytes keeping it exactly would take.
#[derive(Clone)]
pub(super) struct ThinnedJpeg {
    coded: Vec<u8>,
    coding: archive::BlobCoding,
    share: f64,
    ssimulacra2: f64,
    exact: usize,
    /// The recoded file itself (what a later file may be stored against).
    bytes: Vec<u8>,
    /// The original file and the score it was recoded to (to recode it toward a reference).
    original: Vec<u8>,
    target: f64,
    /// Whether it was recoded toward the file before it.
    toward: bool,
}

/// Pixels of the files before it that a read may decode to give back the last file of a chain
/// of recoded JPEGs stored each against the one before ([`Chain`]): 24 MP, twelve frames of
/// 1080p (measured: 20 ms a frame, so that a cold read in the mount takes at most about what
/// one of a GOP of video frames does), but at least [`MIN_CHAIN`] files (12 MP photos).
const CHAIN_PIXELS: usize = 24_000_000;
const MIN_CHAIN: usize = 2;
/// Longest chain pack makes, whatever the size (small frames: 48 of 736×544 take about
/// 300 ms to read; readers follow up to `archive::MAX_DELTA_CHAIN`).
const CHAIN_FILES: usize = 48;

/// The recoded JPEG stored last, which the next one of the same layout (storing order is
/// similarity order) may be stored against as its difference (`jpegthin::residual`).
#[derive(Default)]
pub(super) struct Chain {
    last: Option<Link>,
}

/// A file's form against the file before it: its residual's Lepton form and length, and the
/// file recoded toward the one before (`None`: the file as it was recoded alone).
struct Against {
    coded: Vec<u8>,
    residual_size: u64,
    recoded: Option<crate::jpegthin::Thinned>,
}

struct Link {
    coefficients: crate::jpegthin::Coefficients,
    /// Its blob's offset.
    offset: u64,
    /// How many files before it are stored each against the one before (0: it is alone).
    depth: u32,
}

impl Chain {
    /// `t` stored against the last file where that is smaller and gives `t` back exactly
    /// (checked here by decoding it as readers do); `t` as it is otherwise. Against the last
    /// file, `t` is also recoded again from its original with its thinning spent *toward*
    /// that file (`jpegthin::search` with a reference: coefficients one step from the
    /// reference's take its value, so that their difference is zero), and that form is taken
    /// where its difference is smaller still. The reference is then the file stored, whether
    /// stored against the last or not (files of other layouts start a chain).
    fn store_against_last(&mut self, t: ThinnedJpeg) -> ThinnedJpeg {
        let (
            archive::BlobCoding::JpegThinned {
                size,
                hash,
                score_centi: centi,
                original_size,
            },
            Ok(coefficients),
        ) = (t.coding, crate::jpegthin::coefficients(&t.bytes))
        else {
            self.last = None;
            return t;
        };
        let limit = (CHAIN_PIXELS / coefficients.pixels().max(1)).clamp(MIN_CHAIN, CHAIN_FILES);
        let against = self
            .last
            .take()
            .filter(|l| (l.depth as usize) < limit)
            .filter(|l| promising(&coefficients, &l.coefficients))
            .and_then(|l| Some((against(&t, &l.coefficients)?, l.offset, l.depth)));
        let Some((against, reference, depth)) = against else {
            self.last = Some(Link {
                coefficients,
                offset: u64::MAX,
                depth: 0,
            });
            return t;
        };
        let coding = |size, hash, score_centi| archive::BlobCoding::JpegThinnedDelta {
            size,
            hash,
            score_centi,
            original_size,
            reference,
            residual_size: against.residual_size,
        };
        let (t, coefficients) = match against.recoded {
            None => {
                let coding = coding(size, hash, centi);
                (
                    ThinnedJpeg {
                        coded: against.coded,
                        coding,
                        ..t
                    },
                    Ok(coefficients),
                )
            }
            Some(r) => {
                let coding = coding(
                    r.bytes.len() as u64,
                    xxh3_64(&r.bytes),
                    score_centi(r.ssimulacra2),
                );
                let coefficients = crate::jpegthin::coefficients(&r.bytes);
                let t = ThinnedJpeg {
                    coded: against.coded,
                    coding,
                    ssimulacra2: r.ssimulacra2,
                    bytes: r.bytes,
                    toward: true,
                    ..t
                };
                (t, coefficients)
            }
        };
        self.last = coefficients.ok().map(|coefficients| Link {
            coefficients,
            offset: u64::MAX,
            depth: depth + 1,
        });
        t
    }

    /// Records where the file just chained was stored.
    fn stored_at(&mut self, offset: u64) {
        if let Some(l) = self.last.as_mut() {
            l.offset = offset;
        }
    }
}

/// `t` stored against `reference` in the smaller of two forms, where either is smaller
/// than `t`'s own: `t` recoded toward the reference, and `t` as it is (which wins where the
/// two files were recoded alike, or the search toward the reference stopped short). Only
/// the form taken is checked. `None` where neither pays.
fn against(t: &ThinnedJpeg, reference: &crate::jpegthin::Coefficients) -> Option<Against> {
    let toward = thinned_toward(t, reference).and_then(|r| {
        let (coded, residual_size) = residual_form(&r.bytes, reference)?;
        Some(Against {
            coded,
            residual_size,
            recoded: Some(r),
        })
    });
    let alone = residual_form(&t.bytes, reference).map(|(coded, residual_size)| Against {
        coded,
        residual_size,
        recoded: None,
    });
    let mut forms: Vec<Against> = [toward, alone]
        .into_iter()
        .flatten()
        .filter(|a| a.coded.len() < t.coded.len())
        .collect();
    // Stable: at equal sizes, the form recoded toward the reference.
    forms.sort_by_key(|a| a.coded.len());
    forms.into_iter().find(|a| {
        let file = a.recoded.as_ref().map_or(&t.bytes, |r| &r.bytes);
        restores(&a.coded, a.residual_size, reference, file)
    })
}

/// `t`'s original recoded with its thinning spent toward `reference`, where that reaches `t`'s
/// target (first tried at the ranks `t` took thinned alone).
fn thinned_toward(
    t: &ThinnedJpeg,
    reference: &crate::jpegthin::Coefficients,
) -> Option<crate::jpegthin::Thinned> {
    match crate::jpegthin::search(&t.original, t.target, Some(t.share), Some(reference)) {
        Ok(found) => found,
        Err(e) => {
            log::debug!("not recoded toward the file before: {e}");
            None
        }
    }
}

/// Whether a file (`coefficients`) is worth coding against `reference` (a Lepton coding and its
/// check, 0.4 s for a 12 MP photo): where the rough bit count of its differences is under 3/4
/// of its own. Measured: 0.26–0.55 on the frames of two bursts (those stored against the one
/// before, and those where that came out larger alike), 1.37–1.95 on unrelated 12 MP photos.
fn promising(
    coefficients: &crate::jpegthin::Coefficients,
    reference: &crate::jpegthin::Coefficients,
) -> bool {
    coefficients
        .bits_alone_and_against(reference)
        .is_some_and(|(alone, against)| against * 4 < alone * 3)
}

/// A recoded JPEG's (`bytes`) Lepton-compressed residual against `reference`, and the
/// residual's length.
fn residual_form(
    bytes: &[u8],
    reference: &crate::jpegthin::Coefficients,
) -> Option<(Vec<u8>, u64)> {
    let residual = crate::jpegthin::residual(bytes, reference).ok()?;
    let coded = crate::lepton::encode_any(&residual)?;
    Some((coded, residual.len() as u64))
}

/// Whether a [`residual_form`] gives `bytes` back exactly, read as readers read it.
fn restores(
    coded: &[u8],
    residual_size: u64,
    reference: &crate::jpegthin::Coefficients,
    bytes: &[u8],
) -> bool {
    crate::lepton::decompress(coded, residual_size)
        .ok()
        .and_then(|back| crate::jpegthin::restore(&back, reference).ok())
        .is_some_and(|restored| restored == bytes)
}

/// A score as an index records it: hundredths, rounded down.
fn score_centi(ssimulacra2: f64) -> u32 {
    (ssimulacra2 * 100.0).floor().clamp(0.0, 10_000.0) as u32
}

/// How kept JPEGs are recoded in their own DCT: the score to reach, and the share of
/// coefficients a JPEG stored before took (a first guess: similar images take similar shares;
/// taken from the files stored in order, never from files recoded side by side, so that the
/// archive does not depend on which finishes first).
#[derive(Clone, Copy)]
pub(super) struct Thin {
    pub(super) target: f64,
    pub(super) hint: Option<f64>,
}

/// The reason a kept file's entry records: why it was not coded as video; none for a JPEG
/// recoded in its own DCT, whose coding says what it is (`Blob::describe`), so that the
/// index, held by the mount and written twice, does not repeat it for every such file.
pub(super) fn kept_reason(blob: &archive::Blob, reason: &str) -> String {
    match blob.coding {
        archive::BlobCoding::JpegThinned { .. } | archive::BlobCoding::JpegThinnedDelta { .. } => {
            String::new()
        }
        _ => reason.to_string(),
    }
}

/// How a kept file goes into the archive (worked out apart from writing, so that the Lepton
/// work of several files can run in parallel).
pub(super) enum VerbatimForm {
    /// A checked Lepton (JPEG), `pngz` (PNG) or zstd form, and how it is coded (with the
    /// original's size and hash).
    Coded {
        coded: Vec<u8>,
        coding: archive::BlobCoding,
    },
    /// A JPEG recoded in its own DCT.
    Thinned(ThinnedJpeg),
    /// A PNG's checked recoded form as a member of a group (`pngz::member`), with the
    /// file's size and hash.
    PngMember {
        member: Vec<u8>,
        size: u64,
        hash: u64,
    },
    /// The file's bytes, read already.
    Bytes(Vec<u8>),
    /// Streamed from the file as it is written.
    File,
}

pub(super) fn io_error(item: &Item) -> impl Fn(io::Error) -> PackError + '_ {
    |error| PackError::Io {
        path: item.abs.clone(),
        error,
    }
}

/// Reads a kept file and, for a JPEG, makes (or checks) its Lepton form, for a PNG its
/// `pngz` form; any other file (or a PNG that does not recode) is zstd-compressed when its
/// start promises that it pays. `thin`: the score a JPEG recoded in its own DCT must reach
/// (`None`: JPEGs are kept exactly); the recoded file is taken where its Lepton form is
/// smaller than the original's.
pub(super) fn verbatim_form(
    item: &Item,
    mut recoded: Option<Recoded>,
    thin: Option<Thin>,
) -> Result<VerbatimForm, PackError> {
    let io_err = io_error(item);
    let mut f = File::open(&item.abs).map_err(&io_err)?;
    let len = f.metadata().map_err(&io_err)?.len();
    let mut head = Vec::with_capacity(compress::PROBE);
    (&mut f)
        .take(compress::PROBE as u64)
        .read_to_end(&mut head)
        .map_err(&io_err)?;
    let jpeg = len <= crate::lepton::MAX_SIZE as u64 && head.starts_with(&[0xFF, 0xD8, 0xFF]);
    let png = len <= crate::pngz::MAX_SIZE as u64 && crate::pngz::is_png(&head);
    let squeeze = !jpeg && len <= compress::MAX_SIZE as u64 && compress::promising(&head);
    if !jpeg && !png && !squeeze {
        return Ok(VerbatimForm::File);
    }
    let mut data = Vec::with_capacity(len as usize);
    f.seek(SeekFrom::Start(0)).map_err(&io_err)?;
    f.read_to_end(&mut data).map_err(&io_err)?;
    if data.len() as u64 != len {
        return Err(io_err(std::io::Error::other(
            "the file changed while it was read",
        )));
    }
    let hash = xxh3_64(&data);
    if png {
        let coded = match recoded.take() {
            Some(Recoded::Png(coded, made_from)) if made_from == hash => Some(coded),
            Some(Recoded::PngDraft(draft, made_from)) if made_from == hash => {
                crate::pngz::settle(draft, &data)
            }
            _ => crate::pngz::measure(&data),
        };
        // Stored as a member of a group with other PNGs, checked in that form.
        if let Some(member) = coded.and_then(|c| crate::pngz::checked_member(&c, &data)) {
            return Ok(VerbatimForm::PngMember {
                member,
                size: len,
                hash,
            });
        }
        if !squeeze {
            return Ok(VerbatimForm::Bytes(data));
        }
    }
    if squeeze {
        return Ok(match compress::compress(&data) {
            Some(coded) => VerbatimForm::Coded {
                coded,
                coding: archive::BlobCoding::Zstd { size: len, hash },
            },
            None => VerbatimForm::Bytes(data),
        });
    }
    // The form a GOP's budget measured (made with the same `thin`), else made now. A Lepton
    // form is checked (decoded and compared) only here, where the file is kept exactly; a
    // recoded one was checked when made.
    let kept = match recoded {
        Some(Recoded::Thinned(t, made_from)) if made_from == hash => {
            return Ok(VerbatimForm::Thinned(t))
        }
        Some(Recoded::Lepton(coded)) => Some(Recoded::Lepton(coded)),
        _ => jpeg_kept_form(&data, hash, thin, item),
    };
    Ok(match kept {
        Some(Recoded::Thinned(t, _)) => VerbatimForm::Thinned(t),
        Some(Recoded::Lepton(coded)) => match crate::lepton::checked(coded, &data) {
            Some(coded) => VerbatimForm::Coded {
                coded,
                coding: archive::BlobCoding::Lepton { size: len, hash },
            },
            None => VerbatimForm::Bytes(data),
        },
        _ => VerbatimForm::Bytes(data),
    })
}

/// How a JPEG (`bytes`, whose xxh3-64 is `hash`) is kept: its Lepton form, or, with `thin`,
/// its form recoded in its own DCT where that is smaller. A GOP's budget measures a file by
/// it, and storing the file takes the same form; `None` where Lepton fails and recoding does
/// not pay (the file is then stored as it is).
pub(super) fn jpeg_kept_form(
    bytes: &[u8],
    hash: u64,
    thin: Option<Thin>,
    item: &Item,
) -> Option<Recoded> {
    let lepton = crate::lepton::encode(bytes);
    let exact = lepton
        .as_ref()
        .map_or(bytes.len(), |c| c.len().min(bytes.len()));
    match thin.and_then(|thin| thinned_form(item, bytes, thin, exact)) {
        Some(t) => Some(Recoded::Thinned(t, hash)),
        None => lepton.map(Recoded::Lepton),
    }
}

/// A JPEG recoded in its own DCT to the quality `target` and Lepton-compressed, if that is
/// smaller than `kept` bytes (what keeping it exactly takes). Files with data after the image,
/// or that libjpeg-turbo does not take whole, are kept exactly (logged).
pub(super) fn thinned_form(
    item: &Item,
    data: &[u8],
    thin: Thin,
    kept: usize,
) -> Option<ThinnedJpeg> {
    let name = archive::printable(&item.abs);
    let thinned = match crate::jpegthin::search(data, thin.target, thin.hint, None) {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err(e) => {
            log::info!("{name}: kept exactly, not recoded: {e}");
            return None;
        }
    };
    let coded = crate::lepton::compress(&thinned.bytes)?;
    if coded.len() >= kept {
        return None;
    }
    let coding = archive::BlobCoding::JpegThinned {
        size: thinned.bytes.len() as u64,
        hash: xxh3_64(&thinned.bytes),
        score_centi: score_centi(thinned.ssimulacra2),
        original_size: data.len() as u64,
    };
    Some(ThinnedJpeg {
        coded,
        coding,
        bytes: thinned.bytes,
        share: thinned.share,
        ssimulacra2: thinned.ssimulacra2,
        exact: kept,
        original: data.to_vec(),
        target: thin.target,
        toward: false,
    })
}

/// Writes a kept file in the form made for it; for a JPEG recoded in its own DCT, `hint`
/// becomes the share it took (the next search's first guess, in storing order), and the file
/// is stored against the one before it in `chain` where that is smaller.
pub(super) fn write_verbatim(
    writer: &mut ArchiveWriter,
    item: &Item,
    form: VerbatimForm,
    hint: &mut Option<f64>,
    chain: &mut Chain,
) -> Result<archive::Blob, PackError> {
    let name = String::from_utf8_lossy(&item.rel).into_owned();
    let form = match form {
        VerbatimForm::Thinned(t) => {
            *hint = Some(t.share);
            let alone = t.coded.len();
            let t = chain.store_against_last(t);
            log::info!(
                "{}: recoded in its own DCT, {} -> {} bytes stored (SSIMULACRA2 {:.2}){}",
                archive::printable(&item.abs),
                t.exact,
                t.coded.len(),
                t.ssimulacra2,
                if t.toward {
                    format!(", recoded toward the file before and stored as its difference from it ({alone} bytes alone)")
                } else if t.coded.len() < alone {
                    format!(", as its difference from the file before ({alone} bytes alone)")
                } else {
                    String::new()
                }
            );
            VerbatimForm::Thinned(t)
        }
        other => other,
    };
    match form {
        VerbatimForm::Thinned(ThinnedJpeg { coded, coding, .. }) => {
            let mut blob = writer.add_blob(&name, &mut coded.as_slice(), coded.len() as u64)?;
            blob.coding = coding;
            chain.stored_at(blob.offset);
            Ok(blob)
        }
        VerbatimForm::Coded { coded, coding } => {
            let mut blob = writer.add_blob(&name, &mut coded.as_slice(), coded.len() as u64)?;
            blob.coding = coding;
            Ok(blob)
        }
        VerbatimForm::PngMember { member, size, hash } => {
            Ok(writer.add_png_member(&member, size, hash)?)
        }
        VerbatimForm::Bytes(data) => {
            Ok(writer.add_blob(&name, &mut data.as_slice(), data.len() as u64)?)
        }
        VerbatimForm::File => {
            // Streamed: an error reading the file is the file's, any other the archive's (a
            // full disk must not be blamed on an album file).
            let io_err = io_error(item);
            let f = File::open(&item.abs).map_err(&io_err)?;
            let len = f.metadata().map_err(&io_err)?.len();
            let mut source = SourceFile {
                file: f,
                failed: false,
            };
            match writer.add_blob(&name, &mut source, len) {
                Ok(blob) => Ok(blob),
                Err(archive::WriteError::Io(error)) if source.failed => Err(io_err(error)),
                Err(e) => Err(PackError::Write(e)),
            }
        }
    }
}

/// A kept file read into the archive, remembering whether reading it failed.
pub(super) struct SourceFile {
    pub(super) file: File,
    pub(super) failed: bool,
}

impl io::Read for SourceFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf);
        self.failed |= n.is_err();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 320×240 photo-like picture (fine noise: many ±1 coefficients), with a patch
    /// brightened where `patch`.
    fn shot(patch: bool) -> Vec<u8> {
        let img = image::RgbImage::from_fn(320, 240, |x, y| {
            let n = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 3 & 15) as u8;
            let lift = if patch && (96..144).contains(&x) && (64..112).contains(&y) {
                30
            } else {
                0
            };
            image::Rgb([
                (x as u8 / 2 + n).saturating_add(lift),
                ((x * y) / 400) as u8 + n,
                (255 - y as u8).wrapping_add(n),
            ])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&img)
            .unwrap();
        out
    }

    fn thinned(data: &[u8]) -> ThinnedJpeg {
        let item = crate::album::Item {
            rel: b"shot.jpg".to_vec(),
            abs: "shot.jpg".into(),
            mtime: archive::Timestamp { secs: 0, nanos: 0 },
            mode: 0o644,
            found: crate::album::Found::File {
                size: data.len() as u64,
                inode: None,
            },
        };
        let thin = Thin {
            target: 80.0,
            hint: None,
        };
        thinned_form(&item, data, thin, data.len()).expect("the shot thins at 80")
    }

    /// Two shots of one scene that differ in a patch: stored against the first, the second
    /// takes the smaller of its two forms (recoded toward the first, or as recoded alone,
    /// which here differs from the first only in the patch), gives back the file that form
    /// holds, and starts the next link.
    #[test]
    fn a_file_against_the_last_takes_the_smaller_of_its_two_forms() {
        let (first, second) = (thinned(&shot(false)), thinned(&shot(true)));
        let reference = crate::jpegthin::coefficients(&first.bytes).unwrap();
        let alone = residual_form(&second.bytes, &reference).unwrap();
        let toward = thinned_toward(&second, &reference)
            .and_then(|r| residual_form(&r.bytes, &reference).map(|f| (f, r)));
        let smallest = toward
            .as_ref()
            .map_or(alone.0.len(), |((c, _), _)| c.len().min(alone.0.len()));
        assert!(
            alone.0.len() * 4 < second.coded.len(),
            "alike shots: {} bytes against {} alone",
            alone.0.len(),
            second.coded.len()
        );

        let mut chain = Chain::default();
        let first = chain.store_against_last(first);
        chain.stored_at(1000);
        assert!(matches!(
            first.coding,
            archive::BlobCoding::JpegThinned { .. }
        ));
        let stored = chain.store_against_last(second.clone());
        let archive::BlobCoding::JpegThinnedDelta {
            reference: at,
            residual_size,
            size,
            hash,
            ..
        } = stored.coding
        else {
            panic!("not stored against the first: {:?}", stored.coding);
        };
        assert_eq!(at, 1000);
        assert_eq!(stored.coded.len(), smallest);
        // What it holds comes back, and is the file the entry describes.
        let back = crate::lepton::decompress(&stored.coded, residual_size).unwrap();
        let file = crate::jpegthin::restore(&back, &reference).unwrap();
        assert_eq!(file, stored.bytes);
        assert_eq!((file.len() as u64, xxh3_64(&file)), (size, hash));
        assert_eq!(stored.toward, file != second.bytes);
        assert!(stored.ssimulacra2 >= 80.0);
        // The next link is the file stored, one deep.
        let link = chain.last.as_ref().expect("a link");
        assert_eq!(link.depth, 1);
        assert_eq!(
            link.coefficients,
            crate::jpegthin::coefficients(&file).unwrap()
        );
    }
}
