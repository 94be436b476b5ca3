/// Small blocks are cached per thread in front of the system allocator (see the module).
#[global_allocator]
static ALLOCATOR: mothership::alloc_cache::CachedAlloc = mothership::alloc_cache::CachedAlloc;

fn main() {
    std::process::exit(mothership::cli::main());
}
