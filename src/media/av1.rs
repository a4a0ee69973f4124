//! AV1 framing for Matroska (the "AV1 Codec Mapping"): blocks hold a temporal unit's OBUs
//! without temporal delimiters (nor padding); CodecPrivate is an `av1C` record followed by
//! the sequence header OBU.

use super::avc::BitReader;

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_PADDING: u8 = 15;

/// One OBU: its type and its whole bytes (header and size field included).
fn obus(data: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let header = data[i];
        let kind = (header >> 3) & 0x0F;
        let ext = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut j = i + 1 + usize::from(ext);
        let end = if has_size {
            let (size, len) = leb128(data.get(j..)?)?;
            j += len;
            j.checked_add(usize::try_from(size).ok()?)?
        } else {
            data.len()
        };
        out.push((kind, data.get(i..end)?));
        i = end;
    }
    Some(out)
}

fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (k, &b) in data.iter().take(8).enumerate() {
        v |= u64::from(b & 0x7F) << (7 * k);
        if b & 0x80 == 0 {
            return Some((v, k + 1));
        }
    }
    None
}

/// A temporal unit as Matroska stores it: without temporal delimiters and padding OBUs. An
/// unparsable unit is kept as it is (the decoder will say what is wrong with it).
pub fn to_matroska(data: &[u8]) -> Vec<u8> {
    match obus(data) {
        Some(list) => list
            .into_iter()
            .filter(|(t, _)| !matches!(*t, OBU_TEMPORAL_DELIMITER | OBU_PADDING))
            .flat_map(|(_, b)| b.iter().copied())
            .collect(),
        None => data.to_vec(),
    }
}

/// Builds `av1C` + sequence header OBU from an encoder's global header, which is either that
/// already (first byte 0x81: marker and version 1) or a bare sequence header OBU (libaom).
/// `None` when there is no sequence header to describe.
pub fn av1c(extradata: &[u8]) -> Option<Vec<u8>> {
    if extradata.first() == Some(&0x81) {
        return Some(extradata.to_vec());
    }
    let (_, seq) = obus(extradata)?
        .into_iter()
        .find(|(t, _)| *t == OBU_SEQUENCE_HEADER)?;
    let header = seq[0];
    let mut start = 1 + usize::from(header & 0x04 != 0);
    if header & 0x02 != 0 {
        start += leb128(seq.get(start..)?)?.1;
    }
    let f = parse_sequence_header(seq.get(start..)?)?;
    let mut out = vec![
        0x81,
        (f.profile << 5) | (f.level & 0x1F),
        (u8::from(f.tier) << 7)
            | (u8::from(f.high_bitdepth) << 6)
            | (u8::from(f.twelve_bit) << 5)
            | (u8::from(f.mono) << 4)
            | (u8::from(f.subsampling_x) << 3)
            | (u8::from(f.subsampling_y) << 2)
            | (f.chroma_sample_position & 3),
        0, // no initial_presentation_delay
    ];
    out.extend_from_slice(seq);
    Some(out)
}

struct SequenceFacts {
    profile: u8,
    level: u8,
    tier: bool,
    high_bitdepth: bool,
    twelve_bit: bool,
    mono: bool,
    subsampling_x: bool,
    subsampling_y: bool,
    chroma_sample_position: u8,
}

/// The fields av1C repeats, from a sequence_header_obu payload (AV1 spec 5.5).
fn parse_sequence_header(payload: &[u8]) -> Option<SequenceFacts> {
    let mut r = BitReader::new(payload);
    let profile = r.bits(3)? as u8;
    r.bit()?; // still_picture
    let reduced = r.bit()? == 1;
    let (level, tier);
    if reduced {
        level = r.bits(5)? as u8;
        tier = false;
    } else {
        let timing_info = r.bit()? == 1;
        let mut decoder_model_info = false;
        let mut buffer_delay_length = 0;
        if timing_info {
            r.skip(64)?; // num_units_in_display_tick, time_scale
            if r.bit()? == 1 {
                // equal_picture_interval: num_ticks_per_picture_minus_1 as uvlc
                let mut zeros = 0;
                while r.bit()? == 0 {
                    zeros += 1;
                    if zeros > 32 {
                        return None;
                    }
                }
                r.skip(zeros)?;
            }
            decoder_model_info = r.bit()? == 1;
            if decoder_model_info {
                buffer_delay_length = r.bits(5)? + 1;
                r.skip(32)?; // num_units_in_decoding_tick
                r.skip(10)?; // buffer_removal_time_length_minus_1, frame_presentation_...
            }
        }
        let initial_display_delay = r.bit()? == 1;
        let points = r.bits(5)? + 1;
        let mut first = None;
        for _ in 0..points {
            r.skip(12)?; // operating_point_idc
            let lv = r.bits(5)? as u8;
            let t = if lv > 7 { r.bit()? == 1 } else { false };
            if decoder_model_info && r.bit()? == 1 {
                r.skip(2 * buffer_delay_length as usize + 1)?;
            }
            if initial_display_delay && r.bit()? == 1 {
                r.skip(4)?;
            }
            first.get_or_insert((lv, t));
        }
        (level, tier) = first?;
    }
    let wbits = r.bits(4)? + 1;
    let hbits = r.bits(4)? + 1;
    r.skip((wbits + hbits) as usize)?;
    if !reduced && r.bit()? == 1 {
        r.skip(7)?; // frame id lengths
    }
    r.skip(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    let mut force_screen_content_tools = 2;
    if !reduced {
        r.skip(4)?; // interintra, masked compound, warped motion, dual filter
        let order_hint = r.bit()? == 1;
        if order_hint {
            r.skip(2)?; // jnt_comp, ref_frame_mvs
        }
        if r.bit()? == 0 {
            force_screen_content_tools = r.bit()?;
        }
        if force_screen_content_tools > 0 && r.bit()? == 0 {
            r.bit()?; // seq_force_integer_mv
        }
        if order_hint {
            r.skip(3)?;
        }
    }
    r.skip(3)?; // superres, cdef, restoration
                // color_config
    let high_bitdepth = r.bit()? == 1;
    let twelve_bit = profile == 2 && high_bitdepth && r.bit()? == 1;
    let mono = profile != 1 && r.bit()? == 1;
    let (mut cp, mut tc, mut mc) = (2, 2, 2);
    if r.bit()? == 1 {
        cp = r.bits(8)?;
        tc = r.bits(8)?;
        mc = r.bits(8)?;
    }
    let (sx, sy, mut csp) = if mono {
        (true, true, 0)
    } else if cp == 1 && tc == 13 && mc == 0 {
        (false, false, 0) // sRGB: 4:4:4, no range bit
    } else {
        r.bit()?; // color_range
        match profile {
            0 => (true, true, 0),
            1 => (false, false, 0),
            _ => {
                if high_bitdepth && twelve_bit {
                    let x = r.bit()? == 1;
                    let y = x && r.bit()? == 1;
                    (x, y, 0)
                } else {
                    (true, false, 0)
                }
            }
        }
    };
    if sx && sy && !mono {
        csp = r.bits(2)? as u8;
    }
    Some(SequenceFacts {
        profile,
        level,
        tier,
        high_bitdepth,
        twelve_bit,
        mono,
        subsampling_x: sx,
        subsampling_y: sy,
        chroma_sample_position: csp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_delimiters_and_padding_are_dropped() {
        // TD (type 2, size 0), a frame OBU (type 6, 2 bytes), padding (type 15, 1 byte).
        let tu = [0x12, 0x00, 0x32, 0x02, 0xAA, 0xBB, 0x7A, 0x01, 0x00];
        assert_eq!(to_matroska(&tu), vec![0x32, 0x02, 0xAA, 0xBB]);
    }
}
