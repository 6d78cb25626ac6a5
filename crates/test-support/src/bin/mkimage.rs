//! `hivemind-mkimage OUT.tar NAME [--oci]`: writes the busybox test image as a `docker save`
//! archive (default) or an OCI layout tarball, for the README's setup script and CI.

use std::path::PathBuf;
use std::process::ExitCode;

use hivemind_test_support::image::{build_busybox_image, build_busybox_oci_image};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let oci = args.iter().any(|a| a == "--oci");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (Some(out), Some(name), 2) = (positional.first(), positional.get(1), positional.len())
    else {
        eprintln!("usage: hivemind-mkimage OUT.tar NAME [--oci]");
        return ExitCode::from(2);
    };
    let out = PathBuf::from(out);
    let built = if oci {
        build_busybox_oci_image(&out, name)
    } else {
        build_busybox_image(&out, name)
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
