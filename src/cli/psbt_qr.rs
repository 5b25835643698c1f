//! `ckm psbt qr FILE`: a PSBT as QR codes of its UR (`ur:psbt/…`) fragments, drawn in the
//! terminal or written as PNG files, for wallets and signing devices that scan them
//! (Sparrow, Keystone, Passport, SeedSigner, …).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ckm::psbt::ur;
use clap::builder::TypedValueParser as _;
use clap::Args;
use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, EcLevel, QrCode};

use super::psbt_io;
use super::{write_file, Context};

/// Modules of quiet zone around a PNG frame (the QR standard's minimum).
const QUIET_ZONE: usize = 4;

/// `ckm psbt qr`.
#[derive(Debug, Args)]
pub struct QrArgs {
    /// The PSBT (base64, binary or UR; version 0 or 2)
    input: PathBuf,
    /// Write the frames as DIR/frame-001.png, … instead of drawing them
    #[arg(long, value_name = "DIR")]
    png: Option<PathBuf>,
    /// PSBT bytes per frame (smaller frames are easier to scan, larger ones fewer)
    #[arg(long, value_name = "BYTES", default_value_t = ur::DEFAULT_FRAGMENT_LEN,
          value_parser = clap::value_parser!(u64).range(10..=2_000).map(|n| n as usize))]
    fragment_len: usize,
    /// Pixels per QR module in PNG frames
    #[arg(long, value_name = "PX", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    scale: u32,
    /// Milliseconds per frame when animating in a terminal
    #[arg(long, value_name = "MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(50..=10_000))]
    interval_ms: u64,
    /// Stop animating after this many loops [default: until Ctrl-C]
    #[arg(long, value_name = "N")]
    loops: Option<u64>,
}

pub fn run(ctx: &Context, args: QrArgs) -> Result<()> {
    let file = psbt_io::read(&args.input)?;
    let binary = file.psbt.serialize()?;
    let single = ur::encode_parts(&binary, args.fragment_len, 0)?;
    // Animated: the fragments, then as many fountain parts mixing them, so a camera that
    // missed frames completes on the next loop without waiting for the same frames.
    let extra = if single.len() > 1 { single.len() } else { 0 };
    let parts = ur::encode_parts(&binary, args.fragment_len, extra)?;
    let codes = parts
        .iter()
        .map(|p| qr(p))
        .collect::<Result<Vec<QrCode>>>()?;

    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut written = Vec::new();
        for (i, code) in codes.iter().take(single.len()).enumerate() {
            let path = dir.join(format!("frame-{:03}.png", i + 1));
            write_file(&path, &png(code, args.scale)?)?;
            written.push(path.display().to_string());
        }
        return ctx.output(
            serde_json::json!({ "frames": written, "parts": single }),
            || {
                format!(
                    "wrote {} frame(s) to {} (show them in order, looping)",
                    written.len(),
                    dir.display()
                )
            },
        );
    }

    if ctx.json {
        return ctx.output(serde_json::json!({ "parts": single }), String::new);
    }
    let animate = codes.len() > 1 && std::io::stdout().is_terminal();
    if !animate {
        let mut text = String::new();
        for (i, (code, part)) in codes.iter().zip(&single).enumerate() {
            text.push_str(&format!("frame {}/{}: {part}\n", i + 1, single.len()));
            text.push_str(&draw(code));
            text.push('\n');
        }
        return ctx.output(serde_json::Value::Null, || text.trim_end().to_string());
    }
    let mut out = std::io::stdout().lock();
    let mut loops = 0u64;
    loop {
        for (i, code) in codes.iter().enumerate() {
            writeln!(
                out,
                "\x1b[H\x1b[2J{}frame {}/{} — Ctrl-C to stop",
                draw(code),
                i + 1,
                codes.len()
            )?;
            out.flush()?;
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        loops += 1;
        if args.loops.is_some_and(|n| loops >= n) {
            return Ok(());
        }
    }
}

/// The QR code of one UR, in upper case (QR's compact alphanumeric mode).
fn qr(part: &str) -> Result<QrCode> {
    QrCode::with_error_correction_level(part.to_ascii_uppercase(), EcLevel::L).with_context(|| {
        format!(
            "a {}-character UR does not fit a QR code; lower --fragment-len",
            part.len()
        )
    })
}

/// A QR code in half-block characters, light modules drawn (for dark terminals).
fn draw(code: &QrCode) -> String {
    code.render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build()
}

/// A QR code as an 8-bit greyscale PNG, `scale` pixels per module, with its quiet zone.
fn png(code: &QrCode, scale: u32) -> Result<Vec<u8>> {
    let width = code.width();
    let colors = code.to_colors();
    let scale = scale as usize;
    let side = (width + 2 * QUIET_ZONE) * scale;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x, y) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
        for row in y * scale..(y + 1) * scale {
            let start = row * side + x * scale;
            if let Some(span) = pixels.get_mut(start..start + scale) {
                span.fill(0);
            }
        }
    }
    let mut bytes = Vec::new();
    let side = u32::try_from(side).context("QR frame too large")?;
    let mut encoder = png::Encoder::new(&mut bytes, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(bytes)
}
