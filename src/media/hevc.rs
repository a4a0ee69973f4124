//! HEVC bitstream framing: x265 (through FFmpeg) emits Annex B; Matroska wants an `hvcC`
//! record (ISO/IEC 14496-15, 8.3.3) as codec private data and length-prefixed NAL units.

use super::avc::{length_prefixed, nal_units, unescape, BitReader};

const VPS: u8 = 32;
const SPS: u8 = 33;
const PPS: u8 = 34;

fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|h| (h >> 1) & 0x3F)
}

/// Annex B packet → 4-byte length-prefixed NAL units (parameter sets stay in the codec
/// private data only).
pub fn to_length_prefixed(data: &[u8]) -> Vec<u8> {
    length_prefixed(data, |nal| {
        !matches!(nal_type(nal), Some(VPS) | Some(SPS) | Some(PPS))
    })
}

/// What hvcC repeats from the SPS.
struct SpsFacts {
    /// general_profile_space, tier, profile_idc, compatibility flags, constraint flags and
    /// level: the 12 bytes of the general profile_tier_level, as they are.
    ptl: [u8; 12],
    sub_layers: u8,
    temporal_id_nested: bool,
    chroma_format: u8,
    luma_depth: u8,
    chroma_depth: u8,
}

fn parse_sps(nal: &[u8]) -> Option<SpsFacts> {
    let rbsp = unescape(nal.get(2..)?);
    let first = *rbsp.first()?;
    let max_sub_layers_minus1 = (first >> 1) & 7;
    let temporal_id_nested = first & 1 == 1;
    let ptl: [u8; 12] = rbsp.get(1..13)?.try_into().ok()?;
    let mut r = BitReader::new(rbsp.get(13..)?);
    // Sub-layer profile/level presence, then the sub-layers' own profile_tier_level.
    let n = usize::from(max_sub_layers_minus1);
    let mut present = Vec::with_capacity(n);
    for _ in 0..n {
        present.push((r.bit()? == 1, r.bit()? == 1));
    }
    if n > 0 {
        r.skip(2 * (8 - n))?;
    }
    for (profile, level) in present {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma = r.ue()?;
    if chroma == 3 {
        r.bit()?; // separate_colour_plane_flag
    }
    r.ue()?; // pic_width_in_luma_samples
    r.ue()?; // pic_height_in_luma_samples
    if r.bit()? == 1 {
        for _ in 0..4 {
            r.ue()?; // conformance window offsets
        }
    }
    let luma = r.ue()?;
    let chroma_depth = r.ue()?;
    Some(SpsFacts {
        ptl,
        sub_layers: max_sub_layers_minus1 + 1,
        temporal_id_nested,
        chroma_format: u8::try_from(chroma).ok()?,
        luma_depth: u8::try_from(luma).ok()? + 8,
        chroma_depth: u8::try_from(chroma_depth).ok()? + 8,
    })
}

/// Builds an `hvcC` record from Annex B VPS, SPS and PPS units (x265's global headers).
/// `None` when the input is not Annex B or has no parsable SPS.
pub fn hvcc_from_annexb(extradata: &[u8]) -> Option<Vec<u8>> {
    if !extradata.starts_with(&[0, 0, 1]) && !extradata.starts_with(&[0, 0, 0, 1]) {
        return None;
    }
    let units = nal_units(extradata);
    let of = |t: u8| -> Vec<&[u8]> {
        units
            .iter()
            .copied()
            .filter(|n| nal_type(n) == Some(t))
            .collect()
    };
    let (vps, sps, pps) = (of(VPS), of(SPS), of(PPS));
    let facts = parse_sps(sps.first()?)?;
    let mut out = Vec::with_capacity(extradata.len() + 64);
    out.push(1); // configurationVersion
    out.extend_from_slice(&facts.ptl);
    out.extend_from_slice(&[0xF0, 0x00]); // min_spatial_segmentation_idc: unknown
    out.push(0xFC); // parallelismType: unknown
    out.push(0xFC | (facts.chroma_format & 3));
    out.push(0xF8 | (facts.luma_depth.saturating_sub(8) & 7));
    out.push(0xF8 | (facts.chroma_depth.saturating_sub(8) & 7));
    out.extend_from_slice(&[0, 0]); // avgFrameRate: unspecified
                                    // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
    out.push(((facts.sub_layers & 7) << 3) | (u8::from(facts.temporal_id_nested) << 2) | 3);
    let arrays: Vec<(u8, Vec<&[u8]>)> = [(VPS, vps), (SPS, sps), (PPS, pps)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    out.push(arrays.len() as u8);
    for (t, nals) in arrays {
        out.push(0x80 | t); // array_completeness: every set of this type is here
        out.extend_from_slice(&(nals.len().min(0xFFFF) as u16).to_be_bytes());
        for n in nals.iter().take(0xFFFF) {
            out.extend_from_slice(&(n.len().min(0xFFFF) as u16).to_be_bytes());
            out.extend_from_slice(&n[..n.len().min(0xFFFF)]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sets_leave_the_packets() {
        // VPS, then an IDR slice (type 19: header 0x26 0x01).
        let annexb = [0, 0, 0, 1, 0x40, 0x01, 7, 0, 0, 1, 0x26, 0x01, 0xAF];
        assert_eq!(
            to_length_prefixed(&annexb),
            vec![0, 0, 0, 3, 0x26, 0x01, 0xAF]
        );
    }
}
