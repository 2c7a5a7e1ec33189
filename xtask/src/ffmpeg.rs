//! `cargo xtask ffmpeg`: FFmpeg as one standalone `wasm32-wasip1` module (`ffmpeg.wasm`), built
//! from Debian's sources with Debian's clang, lld and wasi-libc (docs/workloads.md).
//!
//! 1. Debian packages: the compiler and its wasm runtime, `dpkg-dev` for `dpkg-source`.
//! 2. Sources: `apt-get source --download-only ffmpeg zlib` (a `deb-src` twin of every `deb`
//!    entry is added when there is none, as root). apt checks what it downloads against the
//!    archive's signed index; `dpkg-source -x` checks the tarballs against the `.dsc`.
//! 3. zlib (PNG needs it; Debian has no wasm build of it): its C files, compiled and archived.
//! 4. FFmpeg: `configure` with [`CONFIGURE`] (only what the example tasks need), `make ffmpeg`.
//!
//! The result is cached in `<target>/ffmpeg/<key>/` by a hash of the `.dsc` files (which name
//! every tarball by its SHA-256), the configuration, the shim and the compiler's version, so a
//! second run is instant; it is handed out as `<target>/wasi-apps/ffmpeg.wasm` (with a
//! `.sha256`), next to the other guests. Neither the sources nor the module are committed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::tools::{self, Step, target_dir};

/// Debian packages the build needs.
const PACKAGES: &[&str] = &[
    "clang",
    "lld",
    "llvm",
    "wasi-libc",
    "libclang-rt-dev-wasm32",
    "dpkg-dev",
    "make",
    "xz-utils",
];

/// The source packages, from the machine's Debian release.
const SOURCES: &[&str] = &["ffmpeg", "zlib"];

/// Changes whenever the recipe below changes in a way the key would not see otherwise.
const RECIPE: &str = "ffmpeg-wasi-1";

/// The guest's stack: wasm-ld's default of 64 KiB is too small for some encoders (they hang or
/// trap), FFmpeg's threads' default on Linux is 8 MiB.
const STACK_BYTES: u32 = 8 << 20;

/// Included before every C file. wasi-libc declares `tempnam` (and `mkstemp`) but has neither;
/// libavutil's temporary-file helper (two-pass logs and the like) then reports "cannot
/// allocate file name" instead of the link failing.
const SHIM: &str = "#include <stdio.h>\n\
#define tempnam(dir, prefix) ((void)(dir), (void)(prefix), (char *)0)\n";

/// FFmpeg's configuration: the `ffmpeg` program with only what the example tasks and the
/// documented workloads need (docs/workloads.md lists it), no assembly (none for wasm), no
/// threads (wasm32-wasip1 has none), no network, nothing picked up from the build machine.
const CONFIGURE: &[&str] = &[
    "--enable-cross-compile",
    "--target-os=none",
    "--arch=wasm32",
    "--cpu=generic",
    "--disable-everything",
    "--disable-autodetect",
    "--disable-asm",
    "--disable-pthreads",
    "--disable-w32threads",
    "--disable-os2threads",
    "--disable-network",
    "--disable-doc",
    "--disable-debug",
    "--disable-ffplay",
    "--disable-ffprobe",
    "--enable-avdevice",
    "--enable-ffmpeg",
    "--enable-swscale",
    "--enable-swresample",
    "--enable-zlib",
    "--enable-protocol=file,pipe",
    "--enable-demuxer=mov,matroska,image2,wav,png_pipe,mjpeg",
    "--enable-muxer=mov,mp4,matroska,image2,wav,null",
    "--enable-decoder=h264,mpeg4,mjpeg,png,aac,pcm_s16le,rawvideo",
    "--enable-encoder=mpeg4,mjpeg,png,pcm_s16le,wrapped_avframe",
    "--enable-parser=h264,mpeg4video,mjpeg,png,aac",
    "--enable-filter=scale,format,null,anull,aformat,aresample,testsrc,sine,fps,trim,atrim,setpts,select,thumbnail",
    "--enable-indev=lavfi",
    "--enable-bsf=aac_adtstoasc,h264_mp4toannexb",
];

/// zlib's library sources (everything but the examples and tests).
const ZLIB_FILES: &[&str] = &[
    "adler32", "compress", "crc32", "deflate", "gzclose", "gzlib", "gzread", "gzwrite", "infback",
    "inffast", "inflate", "inftrees", "trees", "uncompr", "zutil",
];

/// Builds (or takes from the cache) `ffmpeg.wasm` and hands it out in `<target>/wasi-apps`.
/// `simd`: compile with wasm SIMD (`-msimd128`; the engines we run on all have it). Returns
/// the module's path.
pub(crate) fn build(simd: bool) -> Result<PathBuf> {
    tools::ensure_apt(PACKAGES)?;
    for tool in [
        "clang",
        "wasm-ld",
        "llvm-ar",
        "llvm-ranlib",
        "dpkg-source",
        "make",
    ] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!(
                "`{tool}` is missing: install Debian's {} (as root)",
                PACKAGES.join(" ")
            );
        }
    }
    let home = target_dir().join("ffmpeg");
    let downloads = home.join("sources");
    std::fs::create_dir_all(&downloads)?;
    ensure_deb_src()?;
    let mut apt = Command::new("apt-get");
    apt.args(["source", "--download-only", "-qq"])
        .args(SOURCES)
        .current_dir(&downloads);
    Step::new("apt-get source ffmpeg zlib").run(apt)?;
    let dsc = |name: &str| newest_dsc(&downloads, name);
    let (ffmpeg_dsc, zlib_dsc) = (dsc("ffmpeg")?, dsc("zlib")?);

    let cflags = cflags(simd);
    let key = cache_key(&[&ffmpeg_dsc, &zlib_dsc], &cflags)?;
    let cache = home.join(&key);
    let cached_wasm = cache.join("ffmpeg.wasm");
    if cached_wasm.exists() {
        println!("ffmpeg.wasm: cached ({})", cache.display());
    } else {
        compile(&home, &ffmpeg_dsc, &zlib_dsc, &cflags, &cache)?;
    }
    let out = target_dir().join("wasi-apps");
    std::fs::create_dir_all(&out)?;
    let wasm = out.join("ffmpeg.wasm");
    tools::copy_file(&cached_wasm, &wasm)?;
    let bytes = std::fs::read(&wasm)?;
    let sum = format!("{}  ffmpeg.wasm\n", hex::encode(Sha256::digest(&bytes)));
    std::fs::write(out.join("ffmpeg.wasm.sha256"), &sum)?;
    println!(
        "{} ({:.1} MiB, sha256 {})",
        wasm.display(),
        bytes.len() as f64 / f64::from(1 << 20),
        &sum[..16]
    );
    // The web demo's transcoding page loads it from next to itself.
    let demo = target_dir().join("web-demo");
    if demo.is_dir() {
        tools::copy_file(&wasm, &demo.join("ffmpeg.wasm"))?;
        // Compressed copies of an older module would be served instead of this one.
        for stale in ["ffmpeg.wasm.br", "ffmpeg.wasm.gz"] {
            let _ = std::fs::remove_file(demo.join(stale));
        }
    }
    Ok(wasm)
}

/// The flags every C file is compiled with (besides FFmpeg's own).
fn cflags(simd: bool) -> Vec<String> {
    let mut flags = vec![
        "--target=wasm32-wasi".to_owned(),
        "-O2".to_owned(),
        "-D_WASI_EMULATED_SIGNAL".to_owned(),
        "-D_WASI_EMULATED_PROCESS_CLOCKS".to_owned(),
    ];
    if simd {
        flags.push("-msimd128".to_owned());
    }
    flags
}

/// The cache key: the sources (by their `.dsc`, which holds every tarball's SHA-256), the
/// recipe, the flags and the compiler.
fn cache_key(dscs: &[&Path], cflags: &[String]) -> Result<String> {
    let mut hash = Sha256::new();
    for dsc in dscs {
        hash.update(std::fs::read(dsc)?);
    }
    let clang = Command::new("clang").arg("--version").output()?;
    hash.update(&clang.stdout);
    let mut recipe = format!("{RECIPE}\n{SHIM}\n{STACK_BYTES}\n");
    for flag in CONFIGURE
        .iter()
        .copied()
        .chain(cflags.iter().map(String::as_str))
    {
        let _ = writeln!(recipe, "{flag}");
    }
    hash.update(recipe.as_bytes());
    Ok(hex::encode(&hash.finalize()[..8]))
}

/// Unpacks both sources afresh, builds zlib and FFmpeg, and puts `ffmpeg.wasm` into `cache`.
fn compile(
    home: &Path,
    ffmpeg_dsc: &Path,
    zlib_dsc: &Path,
    cflags: &[String],
    cache: &Path,
) -> Result<()> {
    let build = home.join("build");
    if build.exists() {
        std::fs::remove_dir_all(&build)?;
    }
    std::fs::create_dir_all(&build)?;
    for (dsc, dir) in [(ffmpeg_dsc, "ffmpeg"), (zlib_dsc, "zlib")] {
        let mut unpack = Command::new("dpkg-source");
        unpack
            .args(["--no-copy", "-x"])
            .arg(dsc)
            .arg(build.join(dir));
        Step::new(&format!("dpkg-source -x {}", file_name(dsc))).run(unpack)?;
    }

    // A sysroot with only wasi-libc: clang also searches the host's /usr/include for this
    // target otherwise, and picks up glibc's headers.
    let sysroot = build.join("sysroot");
    std::fs::create_dir_all(sysroot.join("lib"))?;
    std::os::unix::fs::symlink("/usr/include/wasm32-wasi", sysroot.join("include"))?;
    std::os::unix::fs::symlink("/usr/lib/wasm32-wasi", sysroot.join("lib/wasm32-wasi"))?;
    let shim = build.join("wasimoff-shim.h");
    std::fs::write(&shim, SHIM)?;
    let mut cc = cflags.to_vec();
    cc.push(format!("--sysroot={}", sysroot.display()));

    // zlib: its library files, archived.
    let zlib = build.join("zlib");
    let mut objects = Vec::new();
    for name in ZLIB_FILES {
        let mut compile = Command::new("clang");
        compile
            .args(&cc)
            .args(["-c", &format!("{name}.c"), "-o", &format!("{name}.o")])
            .current_dir(&zlib);
        run_quiet(compile, &format!("zlib {name}.c"))?;
        objects.push(format!("{name}.o"));
    }
    let mut archive = Command::new("llvm-ar");
    archive
        .arg("rcs")
        .arg("libz.a")
        .args(&objects)
        .current_dir(&zlib);
    run_quiet(archive, "zlib: llvm-ar")?;

    // FFmpeg.
    let ffmpeg = build.join("ffmpeg");
    let extra_cflags = format!(
        "{} -include {} -I{}",
        cc.join(" "),
        shim.display(),
        zlib.display()
    );
    let extra_ldflags = format!(
        "{} -Wl,-z,stack-size={STACK_BYTES} -L{}",
        cc.join(" "),
        zlib.display()
    );
    let mut configure = Command::new("./configure");
    configure
        .args(CONFIGURE)
        .args([
            "--cc=clang",
            "--ar=llvm-ar",
            "--ranlib=llvm-ranlib",
            "--nm=llvm-nm",
            "--strip=llvm-strip",
        ])
        .arg(format!("--extra-cflags={extra_cflags}"))
        .arg(format!("--extra-ldflags={extra_ldflags}"))
        .arg("--extra-libs=-lwasi-emulated-signal -lwasi-emulated-process-clocks")
        .current_dir(&ffmpeg);
    Step::new("ffmpeg: configure").run(configure)?;
    let jobs = std::thread::available_parallelism().map_or(2, usize::from);
    let mut make = Command::new("make");
    make.args([format!("-j{jobs}"), "ffmpeg".to_owned()])
        .current_dir(&ffmpeg);
    Step::new("ffmpeg: make").run(make)?;

    let module = std::fs::read(ffmpeg.join("ffmpeg")).context("reading the built ffmpeg")?;
    if !module.starts_with(b"\0asm") {
        bail!("the built ffmpeg is not a wasm module");
    }
    std::fs::create_dir_all(cache)?;
    std::fs::write(cache.join("ffmpeg.wasm"), &module)?;
    // The configuration FFmpeg reports, for docs/workloads.md.
    tools::copy_file(
        &ffmpeg.join("ffbuild/config.mak"),
        &cache.join("config.mak"),
    )?;
    std::fs::remove_dir_all(&build)?;
    Ok(())
}

/// The `.dsc` of the newest downloaded version of source package `name`.
fn newest_dsc(dir: &Path, name: &str) -> Result<PathBuf> {
    let prefix = format!("{name}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let file = file_name(p);
            file.starts_with(&prefix) && file.ends_with(".dsc")
        })
        .collect();
    // Several versions after an update: compare them the way dpkg does.
    found.sort_by(|a, b| {
        let version = |p: &PathBuf| {
            file_name(p)
                .trim_start_matches(&prefix)
                .trim_end_matches(".dsc")
                .to_owned()
        };
        let newer = Command::new("dpkg")
            .args(["--compare-versions", &version(a), "gt", &version(b)])
            .status()
            .is_ok_and(|s| s.success());
        if newer {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Less
        }
    });
    found
        .pop()
        .with_context(|| format!("apt-get source downloaded no {name}_*.dsc"))
}

/// Makes `apt-get source` work: adds a `deb-src` twin of every Debian `deb` entry when no
/// `deb-src` entry exists (root only; others are told what to do).
fn ensure_deb_src() -> Result<()> {
    let mut entries = String::new();
    let mut have_src = false;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.filter_map(Result::ok).map(|e| e.path()));
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let name = file_name(file);
        if name.ends_with(".sources") {
            // deb822: stanzas separated by blank lines.
            for stanza in text.split("\n\n") {
                let types = stanza
                    .lines()
                    .find_map(|l| l.strip_prefix("Types:"))
                    .unwrap_or_default();
                if types.split_whitespace().any(|t| t == "deb-src") {
                    have_src = true;
                } else if types.split_whitespace().any(|t| t == "deb") && stanza.contains("debian")
                {
                    let twin: Vec<&str> = stanza
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.starts_with("Types:"))
                        .collect();
                    let _ = write!(entries, "Types: deb-src\n{}\n\n", twin.join("\n"));
                }
            }
        } else if name.ends_with(".list") {
            for line in text.lines().map(str::trim) {
                if line.starts_with("deb-src ") {
                    have_src = true;
                } else if let Some(rest) = line.strip_prefix("deb ")
                    && line.contains("debian")
                {
                    let _ = writeln!(entries, "deb-src {rest}");
                }
            }
        }
    }
    if have_src {
        return Ok(());
    }
    if !tools::is_root() || entries.is_empty() {
        bail!(
            "apt has no deb-src entry, so `apt-get source` cannot fetch FFmpeg: add one for \
             your Debian release (as root) and run `apt-get update`"
        );
    }
    let file = Path::new("/etc/apt/sources.list.d/wasimoff-deb-src.list");
    let file = if entries.starts_with("Types:") {
        file.with_extension("sources")
    } else {
        file.to_path_buf()
    };
    std::fs::write(&file, entries).with_context(|| format!("writing {}", file.display()))?;
    println!(
        "added {} (deb-src entries for apt-get source)",
        file.display()
    );
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    Step::new("apt-get update").run(update)
}

/// Runs a command, showing its output only when it fails.
fn run_quiet(mut command: Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
