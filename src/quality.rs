//! Image quality scores: SSIMULACRA2 (perceptual; 90 = visually lossless) and PSNR.

use image::RgbImage;

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("dimensions differ: {0}x{1} vs {2}x{3}")]
    Dimensions(u32, u32, u32, u32),
    #[error("SSIMULACRA2 failed: {0}")]
    Ssimulacra2(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub ssimulacra2: f64,
    pub psnr: f64,
}

fn to_rgb(img: &RgbImage) -> Result<ssimulacra2::Rgb, QualityError> {
    let data = img
        .pixels()
        .map(|p| {
            [
                f32::from(p[0]) / 255.0,
                f32::from(p[1]) / 255.0,
                f32::from(p[2]) / 255.0,
            ]
        })
        .collect();
    ssimulacra2::Rgb::new(
        data,
        img.width() as usize,
        img.height() as usize,
        ssimulacra2::TransferCharacteristic::SRGB,
        ssimulacra2::ColorPrimaries::BT709,
    )
    .map_err(|e| QualityError::Ssimulacra2(format!("{e:?}")))
}

/// Scores `distorted` against `original`. Images under 8×8 pixels (too small for
/// SSIMULACRA2) are scored by enlarging both by pixel replication.
pub fn score(original: &RgbImage, distorted: &RgbImage) -> Result<Scores, QualityError> {
    if original.dimensions() != distorted.dimensions() {
        return Err(QualityError::Dimensions(
            original.width(),
            original.height(),
            distorted.width(),
            distorted.height(),
        ));
    }
    let psnr = psnr(original, distorted);
    if original.as_raw() == distorted.as_raw() {
        return Ok(Scores {
            ssimulacra2: 100.0,
            psnr,
        });
    }
    let (a, b) = if original.width() < 8 || original.height() < 8 {
        let f = 8u32.div_ceil(original.width().min(original.height()));
        let up = |i: &RgbImage| {
            image::imageops::resize(
                i,
                i.width() * f,
                i.height() * f,
                image::imageops::FilterType::Nearest,
            )
        };
        (up(original), up(distorted))
    } else {
        (original.clone(), distorted.clone())
    };
    let s = ssimulacra2::compute_frame_ssimulacra2(to_rgb(&a)?, to_rgb(&b)?)
        .map_err(|e| QualityError::Ssimulacra2(format!("{e:?}")))?;
    Ok(Scores {
        ssimulacra2: s,
        psnr,
    })
}

/// PSNR over all channels (infinity for identical images, reported as 100).
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let n = a.as_raw().len().max(1) as f64;
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    if se == 0.0 {
        100.0
    } else {
        10.0 * (255.0f64 * 255.0 / (se / n)).log10()
    }
}
