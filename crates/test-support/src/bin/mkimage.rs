//! `hivemind-mkimage OUT.tar NAME [--oci] [--workload PATH_TO_hm-workload]`: writes the busybox
//! test image as a `docker save` archive (default) or an OCI layout tarball, for the README's
//! setup script and CI. With `--workload`, writes the workload image instead (busybox plus
//! `hm-workload` and its library closure, running `hm-workload serve --port 80`).

use std::path::PathBuf;
use std::process::ExitCode;

use hivemind_test_support::image::{
    build_busybox_image, build_busybox_oci_image, build_workload_image, build_workload_oci_image,
};

const USAGE: &str = "usage: hivemind-mkimage OUT.tar NAME [--oci] [--workload PATH_TO_hm-workload]";

fn main() -> ExitCode {
    let mut oci = false;
    let mut workload: Option<PathBuf> = None;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--oci" => oci = true,
            "--workload" => match args.next() {
                Some(path) if workload.is_none() => workload = Some(PathBuf::from(path)),
                _ => return usage(),
            },
            flag if flag.starts_with("--") => return usage(),
            _ => positional.push(arg),
        }
    }
    let [out, name] = positional.as_slice() else {
        return usage();
    };
    let out = PathBuf::from(out);
    let built = match (&workload, oci) {
        (Some(bin), true) => build_workload_oci_image(&out, name, bin),
        (Some(bin), false) => build_workload_image(&out, name, bin),
        (None, true) => build_busybox_oci_image(&out, name),
        (None, false) => build_busybox_image(&out, name),
    };
    match built {
        Ok(image) => {
            println!("{} {} {}", out.display(), image.name, image.config_digest);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("hivemind-mkimage: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
