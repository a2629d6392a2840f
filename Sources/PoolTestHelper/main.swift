// Child processes for the multi-process, crash and grow tests. Each command
// prints one line per step so that the test can wait on its output instead
// of sleeping.
import Atomics
import PoolCore
import PoolThreads
#if canImport(Glibc)
import Glibc
#endif

/// One line to stdout, unbuffered: the test is waiting for it.
func say(_ text: String) {
    let line = text + "\n"
    _ = line.withCString { write(1, $0, strlen($0)) }
}

func fail(_ text: String) -> Never {
    say("error: \(text)")
    exit(2)
}

/// `what` failed with errno.
func failErrno(_ what: String) -> Never {
    fail("\(what): \(String(cString: strerror(errno)))")
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    fail("usage: PoolTestHelper storm|hold|heap-storm HOME NAME … | file-writer DIR | remote-… NODE KEYFILE …")
}
let home = arguments[2]
let name = arguments.count > 3 ? arguments[3] : ""

func openPool() -> Pool {
    do { return try Pool.open(name: name, at: home) } catch { fail("\(error)") }
}

/// The storms' random numbers: cheap, and the same for the same seed.
struct Xorshift {
    var state: UInt64
    init(_ seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
}

/// A storm's loop: `step` runs `operations` times (for ever when 0), a step
/// that finds the pool full or loses a race counting too. Says "ready" after
/// `readyAfter` steps, "tick N" every 100 when unbounded, "done N" at the end.
func runSteps(operations: Int, readyAfter: Int, _ step: () -> Void) {
    var done = 0
    while operations == 0 || done < operations {
        step()
        done += 1
        if done == readyAfter { say("ready") }
        if done % 100 == 0 && operations == 0 { say("tick \(done)") }
    }
    say("done \(done)")
}

/// The stamp a storm writes at both ends of each run it owns.
func stamp(_ address: GlobalAddress) -> UInt64 { address.rawValue ^ 0x5a5a_5a5a_5a5a_5a5a }

/// Allocates and frees page runs at random, publishing each run's address
/// into its slot of the shared region (16 bytes a slot: count, address), and
/// checking its stamps before freeing it: a run handed out twice shows up as
/// a broken stamp.
func storm(region regionName: String, index: Int, operations: Int, seed: UInt64) {
    let pool = openPool()
    let region: Region
    do { region = try pool.openRegion(name: regionName) } catch { fail("\(error)") }
    let slots = 64
    let pageSize = UInt64(pool.pageSize)
    var random = Xorshift(seed)
    func next() -> UInt64 { random.next() }
    let counts = [1, 1, 1, 2, 3, 4, 8, 16, 17, 40]
    // Runs published by an earlier, killed helper may have died before their
    // stamps were written; only this life's runs are checked.
    var mine = Set<UInt64>()
    runSteps(operations: operations, readyAfter: 200) {
        let slot = region.address.advanced(by: UInt64((index * slots + Int(next() % UInt64(slots))) * 16))
        do {
            let address = GlobalAddress(rawValue: try pool.load(at: slot.advanced(by: 8)))
            if address.isNull {
                let count = counts[Int(next() % UInt64(counts.count))]
                try pool.store(UInt64(count), at: slot)
                let run = try pool.allocatePages(count: count, publishingTo: slot.advanced(by: 8))
                try pool.store(stamp(run), at: run)
                try pool.store(stamp(run), at: run.advanced(by: UInt64(count) * pageSize - 8))
                mine.insert(run.rawValue)
            } else {
                let count = Int(try pool.load(at: slot))
                let first = try pool.load(at: address)
                let last = try pool.load(at: address.advanced(by: UInt64(count) * pageSize - 8))
                guard !mine.contains(address.rawValue) || (first == stamp(address) && last == stamp(address)) else {
                    fail("run \(address) of \(count) pages lost its stamp: \(first) \(last)")
                }
                try pool.freePages(at: address, count: count, clearing: slot.advanced(by: 8))
                mine.remove(address.rawValue)
            }
        } catch PoolError.poolFull {
            return
        } catch {
            fail("\(error)")
        }
    }
    pool.close()
}

/// What a heap storm writes into each object: a stamp, its size, a pattern.
enum HeapPattern {
    static func stamp(_ address: GlobalAddress) -> UInt64 { address.rawValue ^ 0xa5a5_a5a5_a5a5_a5a5 }
    static func byte(_ address: GlobalAddress) -> UInt8 { UInt8(truncatingIfNeeded: address.rawValue >> 4) }

    static func write(_ pool: Pool, _ address: GlobalAddress, size: Int) throws {
        try pool.withUnsafeMutableBytes(at: address, count: size) { bytes in
            bytes.initializeMemory(as: UInt8.self, repeating: byte(address))
            bytes.storeBytes(of: UInt64(size), toByteOffset: 8, as: UInt64.self)
            bytes.storeBytes(of: stamp(address), toByteOffset: 0, as: UInt64.self)
        }
    }

    /// nil when the object is not stamped yet; else whether it is intact.
    static func check(_ pool: Pool, _ address: GlobalAddress) throws -> Bool? {
        guard try pool.load(at: address) == stamp(address) else { return nil }
        let size = Int(try pool.load(at: address.advanced(by: 8)))
        return try pool.withUnsafeMutableBytes(at: address, count: size) { bytes in
            bytes[16...].allSatisfy { $0 == byte(address) }
        }
    }
}

/// Allocates objects of random sizes, fills them, and puts them into random
/// slots of a queue shared by all storms; frees the objects other storms left
/// in the slots it picks: frees cross processes. Each storm first publishes a
/// new object into its own private slot (the queue's first 16 words), so
/// that no other storm sees it before it is filled.
func heapStorm(heap heapName: String, queue: String, index: Int, operations: Int, seed: UInt64) {
    let pool = openPool()
    let heap: Heap
    let slots: Region
    do {
        heap = try pool.openHeap(name: heapName)
        slots = try pool.openRegion(name: queue)
    } catch { fail("\(error)") }
    var random = Xorshift(seed)
    func next() -> UInt64 { random.next() }
    let privateSlots = 16
    let count = Int(slots.size) / 8
    let mine = slots.address.advanced(by: UInt64(index * 8))
    func sharedSlot() -> GlobalAddress {
        slots.address.advanced(by: UInt64(privateSlots) * 8 + next() % UInt64(count - privateSlots) * 8)
    }
    /// Moves the object in the private slot into an empty shared slot.
    func hand(_ object: GlobalAddress) throws {
        while true {
            if try pool.compareAndSwap(at: sharedSlot(), expected: 0, desired: object.rawValue).exchanged {
                try pool.store(0, at: mine)
                return
            }
        }
    }
    do {
        // An earlier life of this storm died with an object in its private
        // slot: handed over already (and maybe freed by another storm since),
        // or not. Freeing it could free it twice; forgetting it at worst
        // leaks one object, which the test allows per killed storm.
        try pool.store(0, at: mine)
    } catch { fail("\(error)") }
    runSteps(operations: operations, readyAfter: 300) {
        let slot = sharedSlot()
        do {
            let address = GlobalAddress(rawValue: try pool.load(at: slot))
            if address.isNull {
                let size = next() % 97 == 0 ? 300_000 : Int(16 + next() % 1009)
                let object = try heap.allocate(size: size, publishingTo: mine)
                try HeapPattern.write(pool, object, size: size)
                try hand(object)
            } else if next() & 1 == 0 {
                // Free through the crash-atomic API: whoever clears the slot frees it.
                try heap.free(address, clearing: slot)
            } else {
                // Take it out of the slot (now no one else can reach it),
                // check that no one wrote into it, then free it.
                guard try pool.compareAndSwap(at: slot, expected: address.rawValue, desired: 0).exchanged else {
                    return
                }
                if try HeapPattern.check(pool, address) != true { fail("object \(address) was overwritten") }
                try heap.free(address)
            }
        } catch PoolError.poolFull {
            return
        } catch {
            fail("\(error)")
        }
    }
    pool.close()
}

/// Keeps the pool open and does what stdin asks, one line per command.
func hold() {
    let pool = openPool()
    say("open \(getpid())")
    while let line = readLine() {
        let words = line.split(separator: " ").map(String.init)
        do {
            switch words.first {
            case "alloc":
                say("\(try pool.allocatePages(count: Int(words[1])!))")
            case "free":
                try pool.freePages(at: GlobalAddress(words[1])!, count: Int(words[2])!)
                say("ok")
            case "region-fill":
                let byte = UInt8(words[2])!
                _ = try pool.openRegion(name: words[1]).withUnsafeMutableBytes {
                    $0.initializeMemory(as: UInt8.self, repeating: byte)
                }
                say("ok")
            case "region-sum":
                let sum = try pool.openRegion(name: words[1]).withUnsafeMutableBytes {
                    $0.reduce(0) { $0 + Int($1) }
                }
                say("\(sum)")
            case "region-get":
                let offset = Int(words[2])!
                say("\(try pool.openRegion(name: words[1]).withUnsafeMutableBytes { $0[offset] })")
            case "region-set":
                let (offset, byte) = (Int(words[2])!, UInt8(words[3])!)
                try pool.openRegion(name: words[1]).withUnsafeMutableBytes { $0[offset] = byte }
                say("ok")
            case "epoch-enter":
                // Holds an epoch of the heap open on a thread of its own until epoch-exit.
                let heap = try pool.openHeap(name: words[1])
                EpochHolder.start(heap)
                say("ok")
            case "epoch-exit":
                EpochHolder.stop()
                say("ok")
            case "shelves":
                say("\(pool.info().shelves.count)")
            case "freeze":
                let unfrozen = try pool.checkpointShelves().unfrozen
                say(unfrozen.map { "unfrozen: \($0)" } ?? "frozen")
            case "thaw":
                pool.thaw()
                say("ok")
            case "quit":
                pool.close()
                say("bye")
                exit(0)
            default:
                say("error: unknown command \(line)")
            }
        } catch {
            say("error: \(error)")
        }
    }
    pool.close()
}

/// The bytes of file `index` in the file-writer's tree: the test knows them too.
func fileBytes(_ index: Int) -> [UInt8] {
    let size = (index * 7919) % 600_000 + 1
    return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &* 7 &+ $0 >> 12) }
}

/// Writes files into a mounted directory until stopped: each is written
/// under a temporary name in pieces, closed, renamed into place, and then
/// announced ("closed N"); every fifth step removes an earlier file
/// ("removing N", then "removed N"). Stops at the first error (the mount was killed).
func fileWriter(directory: String) -> Never {
    var index = 0
    while true {
        let bytes = fileBytes(index)
        let temporary = "\(directory)/tmp.\(index)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { failErrno("open \(temporary)") }
        var written = 0
        while written < bytes.count {
            let piece = min(65536 + index % 3 * 4096, bytes.count - written)
            let n = bytes[written..<(written + piece)].withUnsafeBytes { write(fd, $0.baseAddress, piece) }
            guard n > 0 else { failErrno("write \(temporary)") }
            written += n
        }
        guard close(fd) == 0 else { failErrno("close") }
        guard rename(temporary, "\(directory)/f\(index)") == 0 else { failErrno("rename") }
        say("closed \(index)")
        if index % 5 == 4 {
            // Killed mid-unlink, the file may be gone or not: say which it is about.
            say("removing \(index - 2)")
            guard unlink("\(directory)/f\(index - 2)") == 0 else { failErrno("unlink") }
            say("removed \(index - 2)")
        }
        index += 1
    }
}

/// Writes a counter into region `region` until told "stop": each round
/// stores it into the first page, then the last, so at every instant the
/// first holds at least the last. Says "writing" once it has begun, and
/// "stopped N" with the last value written.
func regionWriter(region name: String) -> Never {
    let pool = openPool()
    do {
        let region = try pool.openRegion(name: name)
        let last = region.address.advanced(by: UInt64(region.pages - 1) * UInt64(pool.pageSize))
        let stop = UnsafeAtomic<Bool>.create(false)
        let written = UnsafeAtomic<UInt64>.create(0)
        nonisolated(unsafe) let first = pool.unsafePointer(to: region.address)!
        nonisolated(unsafe) let end = pool.unsafePointer(to: last)!
        let thread = JoinableThread {
            var value: UInt64 = 0
            while !stop.load(ordering: .relaxed) {
                value += 1
                first.storeBytes(of: value, as: UInt64.self)
                end.storeBytes(of: value, as: UInt64.self)
                written.store(value, ordering: .releasing)
            }
        }
        while written.load(ordering: .acquiring) == 0 {}
        say("writing")
        while let line = readLine(), line != "stop" {}
        stop.store(true, ordering: .relaxed)
        thread?.join()
        say("stopped \(written.load(ordering: .acquiring))")
    } catch {
        fail("\(error)")
    }
    pool.close()
    exit(0)
}

/// Clones region `name` as c0, c1, … without end; after clone i it sets
/// the source's byte at i × 4096 to 1, destroys clone i − 2 (its source
/// still shared with later ones) and says "cloned i", for kills at any instant.
func cloneStorm(region name: String) -> Never {
    let pool = openPool()
    do {
        for index in 0... {
            _ = try pool.cloneRegion(name: name, as: "c\(index)")
            try pool.openRegion(name: name).withUnsafeMutableBytes { $0[index * 4096 % $0.count] = 1 }
            if index >= 2 { try pool.destroyRegion(name: "c\(index - 2)") }
            say("cloned \(index)")
        }
    } catch {
        fail("\(error)")
    }
    exit(0)
}

/// Opens the pool and forks; the child (which does not call didFork)
/// reads byte `at` of region `clone` and stores 0xEE into byte `store`
/// of region `source`; then the parent reads byte `store` of both.
func forkUse(clone: String, source: String, at: Int, store: Int) -> Never {
    let pool = openPool()
    do {
        let cloneRegion = try pool.openRegion(name: clone), sourceRegion = try pool.openRegion(name: source)
        let child = fork()
        if child == 0 {
            let seen = try cloneRegion.withUnsafeMutableBytes { $0[at] }
            try sourceRegion.withUnsafeMutableBytes { $0[store] = 0xEE }
            say("child read \(seen)")
            _exit(0)
        }
        var status: Int32 = 0
        waitpid(child, &status, 0)
        let kept = try cloneRegion.withUnsafeMutableBytes { $0[store] }
        let written = try sourceRegion.withUnsafeMutableBytes { $0[store] }
        say("parent clone \(kept) source \(written)")
    } catch {
        fail("\(error)")
    }
    pool.close()
    exit(0)
}

switch arguments[1] {
case "fork-use":
    forkUse(clone: arguments[4], source: arguments[5], at: Int(arguments[6])!, store: Int(arguments[7])!)
case "clone-storm":
    cloneStorm(region: arguments[4])
case "region-writer":
    regionWriter(region: arguments[4])
case "file-writer":
    fileWriter(directory: arguments[2])
case "storm":
    guard arguments.count == 8, let index = Int(arguments[5]), let operations = Int(arguments[6]),
          let seed = UInt64(arguments[7]) else { fail("usage: storm HOME NAME REGION INDEX OPS SEED") }
    storm(region: arguments[4], index: index, operations: operations, seed: seed | 1)
case "hold":
    hold()
case "heap-storm":
    guard arguments.count == 9, let index = Int(arguments[6]), index < 16, let operations = Int(arguments[7]),
          let seed = UInt64(arguments[8]) else {
        fail("usage: heap-storm HOME NAME HEAP QUEUE INDEX OPS SEED")
    }
    heapStorm(heap: arguments[4], queue: arguments[5], index: index, operations: operations, seed: seed | 1)
case "remote-storm":
    guard arguments.count == 7, let counter = GlobalAddress(arguments[4]), let rounds = Int(arguments[5]),
          let index = Int(arguments[6]) else { fail("usage: remote-storm NODE KEYFILE COUNTER ROUNDS INDEX") }
    RemoteClients.storm(RemoteClients.connect(arguments[2], arguments[3]), counter: counter, rounds: rounds, index: index)
case "remote-writer":
    guard arguments.count == 6, let region = GlobalAddress(arguments[4]), let pages = Int(arguments[5]) else {
        fail("usage: remote-writer NODE KEYFILE REGION PAGES")
    }
    RemoteClients.writer(RemoteClients.connect(arguments[2], arguments[3]), region: region, pages: pages)
case "remote-heap-writer":
    guard arguments.count == 6, let pages = Int(arguments[5]), pages > 1 else {
        fail("usage: remote-heap-writer HOME NAME HEAP PAGES")
    }
    RemoteClients.heapWriter(home: home, name: name, heap: arguments[4], pages: pages)
case "remote-console":
    guard arguments.count == 6, let slots = Int(arguments[5]) else {
        fail("usage: remote-console NODE KEYFILE TABLE|- SLOTS")
    }
    RemoteClients.console(RemoteClients.connect(arguments[2], arguments[3]), table: GlobalAddress(arguments[4]),
                          slots: slots)
default:
    fail("unknown command \(arguments[1])")
}

/// A thread that sits inside an epoch until told to leave.
enum EpochHolder {
    nonisolated(unsafe) static var entered = pthread_mutex_t()
    nonisolated(unsafe) static var release = pthread_mutex_t()
    nonisolated(unsafe) static var thread = pthread_t()
    nonisolated(unsafe) static var heap: Heap?

    static func start(_ heap: Heap) {
        EpochHolder.heap = heap
        pthread_mutex_init(&entered, nil)
        pthread_mutex_init(&release, nil)
        pthread_mutex_lock(&entered)
        pthread_mutex_lock(&release)
        pthread_create(&thread, nil, { _ in
            try? EpochHolder.heap!.withEpoch {
                pthread_mutex_unlock(&EpochHolder.entered)
                pthread_mutex_lock(&EpochHolder.release)
            }
            return nil
        }, nil)
        pthread_mutex_lock(&entered)
    }

    static func stop() {
        pthread_mutex_unlock(&release)
        pthread_join(thread, nil)
    }
}
