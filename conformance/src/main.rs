fn main() {
    eprintln!("pec-conformance: not yet implemented");
    std::process::exit(2);
}
