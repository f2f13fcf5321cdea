//! Writes the fuzz seed corpus into the directory given: real iam and Tyk
//! records from the producers' encoders, each behind the selector bytes
//! that read it as its own schema, as generic, and without detail fields.

use pumphouse_wire::{encode_iam, encode_tyk, Sampler};

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .expect("usage: seed-corpus <dir>");
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).expect("corpus directory");
    let mut sampler = Sampler::new(22);
    let now = 1_763_700_000;
    let mut n = 0;
    // Selector: schema = byte % 3 (0 iam, 1 tyk, 2 generic); bit 2 omits
    // the detail fields.
    for seq in 0..16 {
        let iam = encode_iam(&sampler.iam(seq, now));
        let tyk = encode_tyk(&sampler.tyk(seq, now));
        for (sel, record) in [
            (0u8, &iam),
            (4, &iam),
            (2, &iam),
            (1, &tyk),
            (5, &tyk),
            (2, &tyk),
        ] {
            let mut input = vec![sel];
            input.extend_from_slice(record);
            std::fs::write(dir.join(format!("seed-{n:03}")), input).expect("write seed");
            n += 1;
        }
    }
    println!("{n} seeds in {}", dir.display());
}
