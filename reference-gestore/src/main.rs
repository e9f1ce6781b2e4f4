fn main() {
    eprintln!("pec-gestore: not yet implemented");
    std::process::exit(2);
}
