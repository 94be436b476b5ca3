fn main() {
    std::process::exit(mothership::cli::main());
}
