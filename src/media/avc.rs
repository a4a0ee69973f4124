//! H.264 bitstream framing: x264 (through FFmpeg) emits Annex B (start codes); Matroska wants
//! an `avcC` record as codec private data and length-prefixed NAL units in blocks.

/// Splits an Annex B stream into NAL units (without start codes).
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                let mut end = i;
                while end > s && data[end - 1] == 0 {
                    end -= 1; // trailing zero of a 4-byte start code
                }
                units.push(&data[s..end]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        if s < data.len() {
            units.push(&data[s..]);
        }
    }
    units
}

/// True for an SEI NAL that carries only "user data unregistered" (x264's version banner).
fn is_banner_sei(nal: &[u8]) -> bool {
    nal.first().is_some_and(|h| h & 0x1F == 6) && nal.get(1) == Some(&5)
}

/// Annex B packet → 4-byte length-prefixed NAL units, without x264's banner SEI.
pub fn to_length_prefixed(data: &[u8]) -> Vec<u8> {
    length_prefixed(data, |nal| !is_banner_sei(nal))
}

/// Annex B → 4-byte length-prefixed NAL units, keeping the non-empty units `keep` accepts.
pub(super) fn length_prefixed(data: &[u8], keep: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for nal in nal_units(data) {
        if nal.is_empty() || !keep(nal) {
            continue;
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// Builds an `avcC` record (ISO/IEC 14496-15) from Annex B SPS and PPS units. Returns the
/// input unchanged if it is not Annex B (already avcC) or lacks an SPS.
pub fn avcc_from_annexb(extradata: &[u8]) -> Vec<u8> {
    if !extradata.starts_with(&[0, 0, 1]) && !extradata.starts_with(&[0, 0, 0, 1]) {
        return extradata.to_vec();
    }
    let units = nal_units(extradata);
    let sps: Vec<&[u8]> = units
        .iter()
        .copied()
        .filter(|n| n.first().is_some_and(|h| h & 0x1F == 7))
        .collect();
    let pps: Vec<&[u8]> = units
        .iter()
        .copied()
        .filter(|n| n.first().is_some_and(|h| h & 0x1F == 8))
        .collect();
    let Some(first) = sps.first().filter(|s| s.len() >= 4) else {
        return extradata.to_vec();
    };
    let profile = first[1];
    let mut out = vec![
        1,
        profile,
        first[2],
        first[3],
        0xFF,
        0xE0 | sps.len().min(31) as u8,
    ];
    for s in sps.iter().take(31) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }
    out.push(pps.len().min(255) as u8);
    for p in pps.iter().take(255) {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    // High profiles carry chroma format and bit depths (needed for 4:4:4).
    if matches!(
        profile,
        100 | 110 | 122 | 144 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        let (chroma, luma_depth, chroma_depth) = sps_format(first).unwrap_or((1, 8, 8));
        out.push(0xFC | (chroma & 3));
        out.push(0xF8 | ((luma_depth - 8) & 7));
        out.push(0xF8 | ((chroma_depth - 8) & 7));
        out.push(0);
    }
    out
}

/// chroma_format_idc and bit depths from a High-profile SPS.
fn sps_format(sps: &[u8]) -> Option<(u8, u8, u8)> {
    // Skip the NAL header and the 3 profile/level bytes.
    let rbsp = unescape(sps.get(1..)?);
    let mut r = BitReader::new(rbsp.get(3..)?);
    r.ue()?; // seq_parameter_set_id
    let chroma = r.ue()?;
    if chroma == 3 {
        r.bit()?; // separate_colour_plane_flag
    }
    let luma = r.ue()? + 8;
    let chroma_depth = r.ue()? + 8;
    Some((chroma as u8, luma as u8, chroma_depth as u8))
}

/// Removes the emulation prevention bytes (00 00 03) of a NAL unit's payload (H.264, HEVC).
pub(super) fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    rbsp
}

/// Reads a bit string MSB first (fixed-width fields and Exp-Golomb codes).
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// `n` bits (at most 32) as an unsigned number.
    pub(super) fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n.min(32) {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    pub(super) fn skip(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    pub(super) fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    pub(super) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut v = 1u32;
        for _ in 0..zeros {
            v = (v << 1) | self.bit()?;
        }
        Some(v - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_prefixes() {
        let annexb = [
            0, 0, 0, 1, 0x65, 1, 2, 0, 0, 1, 0x41, 3, 0, 0, 0, 1, 0x06, 5, 9, 9,
        ];
        let units = nal_units(&annexb);
        assert_eq!(units, vec![&[0x65, 1, 2][..], &[0x41, 3], &[0x06, 5, 9, 9]]);
        assert_eq!(
            to_length_prefixed(&annexb),
            vec![0, 0, 0, 3, 0x65, 1, 2, 0, 0, 0, 2, 0x41, 3]
        );
    }
}
