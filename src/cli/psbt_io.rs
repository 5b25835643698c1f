//! PSBT files in every form ckm reads and writes: base64 text, binary, or URs (`ur:psbt/…`,
//! one per line, fountain-coded fragments for large PSBTs); version 0 or 2 in each. Reading
//! detects the form and the version; writing uses the form asked for and, unless told
//! otherwise, the version that came in.

use std::path::Path;

use anyhow::{Context as _, Result};
use ckm::psbt::ur;
use ckm::psbt::version::PsbtFileForm;
use ckm::psbt::{PsbtVersion, VersionedPsbt};
use clap::builder::TypedValueParser as _;
use clap::{Args, ValueEnum};

use super::write_file;

/// Largest PSBT file read.
const MAX_PSBT_FILE: u64 = 16 * 1024 * 1024;

/// How a PSBT file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsbtFormat {
    /// Base64 text (what Bitcoin Core's RPCs and most wallets exchange)
    Base64,
    /// Raw binary PSBT
    Binary,
    /// Uniform Resources, one `ur:psbt/…` per line (fountain-coded fragments for large
    /// PSBTs), for air-gapped transfer by QR code
    Ur,
}

/// `--psbt-version 0|2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VersionArg {
    /// BIP-0174 (version 0)
    #[value(name = "0")]
    V0,
    /// BIP-0370 (version 2, Bitcoin Core's default)
    #[value(name = "2")]
    V2,
}

impl From<VersionArg> for PsbtVersion {
    fn from(v: VersionArg) -> Self {
        match v {
            VersionArg::V0 => PsbtVersion::V0,
            VersionArg::V2 => PsbtVersion::V2,
        }
    }
}

/// `--format`, `--psbt-version` and `--ur-fragment-len` of a command that writes a PSBT.
#[derive(Debug, Args, Clone)]
pub struct PsbtOutArgs {
    /// Output form [default: the input's form; base64 for a new PSBT]
    #[arg(long, value_enum, value_name = "FORM")]
    pub format: Option<PsbtFormat>,
    /// PSBT version to write [default: the input's version; 0 for a new PSBT]
    #[arg(long = "psbt-version", value_enum, value_name = "VERSION")]
    pub psbt_version: Option<VersionArg>,
    /// With --format ur: PSBT bytes per UR fragment (one QR code each)
    #[arg(long, value_name = "BYTES", default_value_t = ur::DEFAULT_FRAGMENT_LEN,
          value_parser = clap::value_parser!(u64).range(10..=10_000).map(|n| n as usize))]
    pub ur_fragment_len: usize,
}

/// A PSBT read from a file, with the form it came in.
#[derive(Debug)]
pub struct PsbtFile {
    /// The PSBT and its version.
    pub psbt: VersionedPsbt,
    /// The form of the file.
    pub format: PsbtFormat,
}

/// Reads a PSBT file: binary, base64 or URs, version 0 or 2.
pub fn read(path: &Path) -> Result<PsbtFile> {
    let bytes = ckm::store::read_limited(path, MAX_PSBT_FILE)
        .with_context(|| format!("reading {}", path.display()))?;
    let (psbt, form) = VersionedPsbt::from_file_bytes(&bytes)
        .with_context(|| format!("{} is not a PSBT ckm can read", path.display()))?;
    let format = match form {
        PsbtFileForm::Binary => PsbtFormat::Binary,
        PsbtFileForm::Base64 => PsbtFormat::Base64,
        PsbtFileForm::Ur => PsbtFormat::Ur,
    };
    Ok(PsbtFile { psbt, format })
}

/// The bytes of a PSBT file in `format`.
pub fn encode(psbt: &VersionedPsbt, format: PsbtFormat, fragment_len: usize) -> Result<Vec<u8>> {
    let binary = psbt.serialize()?;
    Ok(match format {
        PsbtFormat::Binary => binary,
        PsbtFormat::Base64 => {
            use bitcoin::base64::prelude::{Engine as _, BASE64_STANDARD};
            let mut text = BASE64_STANDARD.encode(&binary);
            text.push('\n');
            text.into_bytes()
        }
        PsbtFormat::Ur => {
            let mut text = ur::encode_parts(&binary, fragment_len, 0)?.join("\n");
            text.push('\n');
            text.into_bytes()
        }
    })
}

/// Writes `psbt` to `path` as `args` ask, defaulting to `default_format` and the PSBT's own
/// version. Returns the form and version written.
pub fn write(
    path: &Path,
    psbt: &mut VersionedPsbt,
    args: &PsbtOutArgs,
    default_format: PsbtFormat,
) -> Result<(PsbtFormat, PsbtVersion)> {
    if let Some(v) = args.psbt_version {
        psbt.set_version(v.into());
    }
    let format = args.format.unwrap_or(default_format);
    let bytes = encode(psbt, format, args.ur_fragment_len)?;
    write_file(path, &bytes)?;
    Ok((format, psbt.version()))
}

/// The name of a form, for reports.
pub fn format_name(format: PsbtFormat) -> &'static str {
    match format {
        PsbtFormat::Base64 => "base64",
        PsbtFormat::Binary => "binary",
        PsbtFormat::Ur => "ur",
    }
}
