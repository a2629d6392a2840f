import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Direct access (libpoolfs-direct.so): programs under `poolfs exec
/// --direct` read and write the mount's files from pool memory, and see
/// the same bytes, sizes and errors as without it. The mount's counters
/// (`.pool/info.json`) prove the copies skipped it.
@Suite(.enabled(if: MountedPool.available, "needs root and /dev/fuse"))
struct DirectAccessMountTests {
    /// A Python process with direct access that does what it is told, one
    /// line per command: open PATH FLAGS, pread FD OFFSET LENGTH (hex, or
    /// "-" for none), pwrite FD OFFSET HEX, read FD LENGTH, fsync FD, close FD.
    static let client = """
        import os, sys
        for line in sys.stdin:
            w = line.split()
            try:
                if w[0] == 'open': out = os.open(w[1], int(w[2]))
                elif w[0] == 'pread': out = os.pread(int(w[1]), int(w[3]), int(w[2])).hex() or '-'
                elif w[0] == 'read': out = os.read(int(w[1]), int(w[2])).hex() or '-'
                elif w[0] == 'pwrite': out = os.pwrite(int(w[1]), bytes.fromhex(w[3]), int(w[2]))
                elif w[0] == 'close': os.close(int(w[1])); out = 'ok'
                elif w[0] == 'fsync': os.fsync(int(w[1])); out = 'ok'
                else: break
            except OSError as e: out = 'error ' + str(e.errno)
            print(out, flush=True)
        """

    /// Debian's, which any user may run.
    static let python = "/usr/bin/python3"

    static func directClient(environment: [String: String] = [:]) throws -> Child {
        try Child(builtExecutable("poolfs"), ["exec", "--direct", "--", DirectAccessMountTests.python, "-c", client], environment: environment)
    }

    /// What direct access served since the mount began.
    static func served(_ mounted: MountedPool) -> (reads: Int, writes: Int, bytesRead: Int, bytesWritten: Int) {
        let data = contents(mounted.path(".pool/info.json")) ?? []
        let object = (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any] ?? [:]
        func number(_ key: String) -> Int { (object[key] as? NSNumber)?.intValue ?? -1 }
        return (number("directReads"), number("directWrites"), number("directBytesRead"), number("directBytesWritten"))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    @Test func readsAndWritesCopyFromPoolMemoryAndMatchTheMount() throws {
        let mounted = try MountedPool(size: 64 << 20)
        var content = pattern(3 << 20, seed: 21)
        #expect(store(content, mounted.path("f")))
        let client = try DirectAccessMountTests.directClient()
        let fd = client.ask("open \(mounted.path("f")) \(O_RDWR)")
        #expect(Int(fd) != nil, "\(fd)")
        // Reads anywhere, across pages and past the end, as the mount answers them.
        for (offset, length) in [(0, 4096), (4000, 300), (1 << 20, 65536), ((3 << 20) - 10, 100), (3 << 20, 10)] {
            let end = min(offset + length, content.count)
            let expected = offset < end ? DirectAccessMountTests.hex(content[offset..<end]) : "-"
            #expect(client.ask("pread \(fd) \(offset) \(length)") == expected, "pread at \(offset)")
        }
        #expect(client.ask("read \(fd) 5") == DirectAccessMountTests.hex(content[0..<5]))
        #expect(client.ask("read \(fd) 5") == DirectAccessMountTests.hex(content[5..<10]))
        // Overwrites land at once for a reader through the mount.
        let before = DirectAccessMountTests.served(mounted)
        #expect(client.ask("pwrite \(fd) 100000 c0ffee") == "3")
        content.replaceSubrange(100_000..<100_003, with: [0xc0, 0xff, 0xee])
        #expect(contents(mounted.path("f")) == content, "f differs")
        let after = DirectAccessMountTests.served(mounted)
        #expect(after.writes == before.writes + 1 && after.bytesWritten == before.bytesWritten + 3, "\(before) → \(after)")
        // The two reads that reach the end went to the mount.
        #expect(after.reads >= 5 && after.bytesRead >= 4096 + 300 + 65536, "\(after)")
        // Past the end the write grows the file: the mount does it, bytes and size the same.
        #expect(client.ask("pwrite \(fd) \(content.count) 0102") == "2")
        content += [1, 2]
        #expect(contents(mounted.path("f")) == content, "f differs")
        #expect(DirectAccessMountTests.served(mounted).writes == after.writes)
        #expect(client.ask("close \(fd)") == "ok")
        // poolfs info reads the same counters from the pool's area.
        let info = try mounted.poolfs("info", mounted.name)
        #expect(info.output.contains("direct: 1 process; ") && info.output.contains(", wrote 3B in 1"), "\(info.output)")
        #expect(client.ask("quit") == "<no answer>")
        client.wait()
        try mounted.remount()
        #expect(contents(mounted.path("f")) == content, "f differs")
    }

    /// The same reads with POOLFS_DIRECT=0 and without: only the second
    /// are served directly.
    @Test func offTurnsItOff() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store(pattern(1 << 20, seed: 2), mounted.path("f")))
        for (setting, counted) in [("0", 0), ("1", 3)] {
            let before = DirectAccessMountTests.served(mounted).reads
            let client = try DirectAccessMountTests.directClient(environment: ["POOLFS_DIRECT": setting])
            let fd = client.ask("open \(mounted.path("f")) \(O_RDONLY)")
            for offset in [0, 4096, 500_000] {
                #expect(client.ask("pread \(fd) \(offset) 4") == DirectAccessMountTests.hex(pattern(1 << 20, seed: 2)[offset..<offset + 4]))
            }
            #expect(DirectAccessMountTests.served(mounted).reads - before == counted, "POOLFS_DIRECT=\(setting)")
        }
    }

    /// The preloaded library is C alone: a program that reads no poolfs
    /// file never maps the Swift runtime; one that does maps the Swift
    /// part at its first read.
    @Test func theSwiftPartLoadsAtTheFirstPoolfsRead() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store(pattern(65536, seed: 4), mounted.path("f")))
        let preload = "LD_PRELOAD=" + builtExecutable("libpoolfs-direct.so")
        let other = try run("env", [preload, "cat", "/proc/self/maps"])
        #expect(other.status == 0 && other.output.contains("libpoolfs-direct.so")
                && !other.output.contains("libswiftCore"), "\(other.output)")
        let reader = try run("env", [preload, DirectAccessMountTests.python, "-c", """
            import os, sys
            fd = os.open(sys.argv[1], os.O_RDONLY)
            before = open("/proc/self/maps").read()
            os.pread(fd, 4, 0)
            after = open("/proc/self/maps").read()
            print("swift" in before, "libpoolfs-direct-swift.so" in after)
            """, mounted.path("f")])
        #expect(reader.status == 0 && reader.output == "False True", "\(reader.output)")
    }

    /// A signal handler may read and close any time (POSIX's read and close
    /// are async-signal-safe): there the library never leases, reads a moved
    /// layout or frees, since the thread it interrupted may hold malloc's
    /// lock. Such calls go to the mount; the fast path serves them as usual.
    @Test func callsInSignalHandlersTakeNoSlowPath() throws {
        let mounted = try MountedPool(size: 32 << 20)
        let content = pattern(1 << 20, seed: 9)
        #expect(store(content, mounted.path("f")))
        #expect(store(content, mounted.path("g")))
        let reader = try Child(try DirectAccessMountTests.signalReader(mounted), [],
                               environment: ["LD_PRELOAD": builtExecutable("libpoolfs-direct.so")])
        defer {
            reader.kill9()
            reader.wait()
        }
        func bytes(_ offset: Int) -> String { DirectAccessMountTests.hex(content[offset..<offset + 4]) }
        func reads() -> Int { DirectAccessMountTests.served(mounted).reads }
        let fd = reader.ask("open \(mounted.path("f"))")
        let start = reads()
        // A file's first read, in a handler: the mount answers, nothing is loaded.
        #expect(reader.ask("handler-pread \(fd) 0 4") == bytes(0))
        #expect(reader.ask("swift") == "0" && reads() == start)
        // The same file outside a handler: leased, then served directly.
        #expect(reader.ask("pread \(fd) 4096 4") == bytes(4096))
        #expect(reader.ask("swift") == "1" && reads() == start + 1)
        // A leased file whose layout has not moved: the fast path serves the handler too.
        #expect(reader.ask("handler-pread \(fd) 8192 4") == bytes(8192) && reads() == start + 2)
        // Its layout moves: the handler's read goes to the mount, the next one outside reads the layout again.
        #expect(truncate(mounted.path("f"), 1 << 19) == 0)
        #expect(reader.ask("handler-pread \(fd) 12288 4") == bytes(12288) && reads() == start + 2)
        #expect(reader.ask("pread \(fd) 16384 4") == bytes(16384) && reads() == start + 3)
        // A handler left by siglongjmp no longer counts: the next file is leased.
        #expect(reader.ask("jump") == "jumped")
        let other = reader.ask("open \(mounted.path("g"))")
        #expect(reader.ask("pread \(other) 0 4") == bytes(0) && reads() == start + 4)
        // Programs see their own handlers.
        #expect(reader.ask("old-handler") == "same")
        // A close in a handler: the number's next file reads its own bytes.
        #expect(reader.ask("handler-close \(fd)") == "ok")
        #expect(store(Array(content.reversed()), mounted.path("h")))
        #expect(reader.ask("open \(mounted.path("h"))") == fd)
        #expect(reader.ask("pread \(fd) 0 4") == DirectAccessMountTests.hex(content.reversed().prefix(4))
                && reads() == start + 5)
    }

    /// Tests/CExample/signal_reader.c, compiled into the pool's scratch directory.
    static func signalReader(_ mounted: MountedPool) throws -> String {
        let program = mounted.scratch.path + "/signal_reader"
        let compiled = try run("cc", ["-std=c11", "-Wall", "-Wextra", "-Werror",
                                      repositoryRoot + "/Tests/CExample/signal_reader.c", "-o", program])
        #expect(compiled.status == 0, "\(compiled.output)")
        return program
    }

    /// A handler that opens, reads and closes a file every 200 µs while the
    /// program it interrupts allocates without pause: each read right, and
    /// malloc's state intact (taking the slow path there aborted the
    /// program in malloc within a second, 3 runs of 3).
    @Test func aHandlerInterruptingMallocReadsSafely() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store(pattern(1 << 20, seed: 10), mounted.path("f")))
        let storm = try run("env", ["LD_PRELOAD=" + builtExecutable("libpoolfs-direct.so"),
                                    try DirectAccessMountTests.signalReader(mounted), "storm", mounted.path("f"), "1"])
        let counts = storm.output.split(separator: " ").compactMap { Int($0) }
        #expect(storm.status == 0 && counts.count == 2 && counts[0] > 100 && counts[0] == counts[1], "\(storm.output)")
    }

    /// A direct writer and a reader through the mount, then the other way.
    @Test func aDirectWriterAndAMountReaderSeeEachOtherAtOnce() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store(pattern(1 << 20, seed: 5), mounted.path("f")))
        let client = try DirectAccessMountTests.directClient()
        let fd = client.ask("open \(mounted.path("f")) \(O_RDWR)")
        let mine = open(mounted.path("f"), O_RDWR)
        defer { close(mine) }
        for round in 0..<50 {
            let offset = round * 20_011 % (1 << 20 - 8)
            let value = UInt8(round)
            #expect(client.ask("pwrite \(fd) \(offset) \(DirectAccessMountTests.hex([value, value]))") == "2")
            var seen = [UInt8](repeating: 0, count: 2)
            #expect(pread(mine, &seen, 2, off_t(offset)) == 2)
            #expect(seen == [value, value], "round \(round)")
            #expect(pwrite(mine, [value &+ 1], 1, off_t(offset + 4)) == 1)
            #expect(client.ask("pread \(fd) \(offset + 4) 1") == DirectAccessMountTests.hex([value &+ 1]))
        }
        // The file grown through the mount reads at its new size (the read
        // that reaches the end through the mount).
        #expect(pwrite(mine, [UInt8](repeating: 7, count: 3), 3, off_t(1 << 20)) == 3)
        #expect(client.ask("pread \(fd) \((1 << 20) + 1) 10") == "0707")
        let served = DirectAccessMountTests.served(mounted)
        #expect(served.writes >= 50 && served.reads >= 50, "\(served)")
    }

    /// A change under a direct read, with a new file taking the freed
    /// pages at once: the reader never copies a byte of another file (0xff
    /// here). The change cuts the file's second half (truncate), punches it
    /// (fallocate), or renames a new file over it; each copy pauses 20 ms
    /// after its check of the layout, so the change and the new file's
    /// write come while it is under way (the mount waits for it before it
    /// frees the pages; a file renamed over keeps its pages while open).
    @Test(arguments: ["truncate", "punch", "rename"])
    func changesUnderADirectReadNeverShowAnotherFilesBytes(change: String) throws {
        let mounted = try MountedPool(size: 64 << 20)
        let half = 1 << 20
        #expect(store([UInt8](repeating: 1, count: 2 * half), mounted.path("a")))
        let reader = try Child(builtExecutable("poolfs"), ["exec", "--direct", "--", DirectAccessMountTests.python, "-c", """
            import os, sys, random
            fd = os.open(sys.argv[1], os.O_RDONLY)
            while sys.stdin.readline().strip() == 'go':
                print('reading', flush=True)
                data = os.pread(fd, 65536, \(half) + random.randrange(0, \(half - 65536), 4096))
                print('read', len(data), int(b'\\xff' in data), flush=True)
            """, mounted.path("a")], environment: ["POOLFS_DIRECT_COPY_DELAY_US": "20000"])
        let foreign = [UInt8](repeating: 0xff, count: half)
        var raced = 0
        for round in 0..<30 {
            reader.send("go")
            #expect(reader.readLine() == "reading")
            let own = [UInt8](repeating: UInt8(round + 2), count: half)
            switch change {
            case "truncate":
                let a = open(mounted.path("a"), O_RDWR)
                #expect(ftruncate(a, off_t(half)) == 0)
                #expect(store(foreign, mounted.path("b\(round)")))
                #expect(pwrite(a, own, half, off_t(half)) == half)
                close(a)
            case "punch":
                let punch = try run("fallocate", ["--punch-hole", "--offset", "\(half)", "--length", "\(half)", mounted.path("a")])
                #expect(punch.status == 0, "\(punch.output)")
                #expect(store(foreign, mounted.path("b\(round)")))
                let a = open(mounted.path("a"), O_RDWR)
                #expect(pwrite(a, own, half, off_t(half)) == half)
                close(a)
            default:
                #expect(store([UInt8](repeating: UInt8(round + 2), count: 2 * half), mounted.path("new")))
                #expect(rename(mounted.path("new"), mounted.path("a")) == 0)
                #expect(store(foreign, mounted.path("b\(round)")))
            }
            if round > 0 { unlink(mounted.path("b\(round - 1)")) }
            let words = (reader.readLine() ?? "").split(separator: " ")
            #expect(words.count == 3 && words[2] == "0", "round \(round): \(words)")
            if words.count == 3, words[1] != "0" { raced += 1 }
        }
        reader.send("stop")
        // Most reads checked the layout before the change reached the mount.
        #expect(raced >= 10, "\(raced) of 30 reads copied while the file changed")
        // Copied directly (a read whose layout moved meanwhile may go to the mount).
        #expect(DirectAccessMountTests.served(mounted).reads >= 10)
    }

    /// Found by fsx under direct access: a size grown by fallocate reads
    /// at once (a size the process had not seen cut reads short), and a
    /// last page a clone shares keeps the clone's bytes past this file's
    /// end (the mount zeroed them for mappings).
    @Test func fallocatedSizesAndSharedLastPagesReadRight() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store(pattern(10_000, seed: 40), mounted.path("f")))
        let client = try DirectAccessMountTests.directClient()
        let fd = client.ask("open \(mounted.path("f")) \(O_RDWR)")
        #expect(client.ask("pread \(fd) 0 4") == DirectAccessMountTests.hex(pattern(10_000, seed: 40)[0..<4]))
        let grow = try run("fallocate", ["--offset", "0", "--length", "200000", mounted.path("f")])
        #expect(grow.status == 0, "\(grow.output)")
        #expect(client.ask("pread \(fd) 150000 4") == "00000000")
        // b shares a's three pages, then is cut inside the second: past
        // b's end that page holds a's bytes, which must stay.
        let a = pattern(3 * 4096, seed: 41)
        #expect(store(a, mounted.path("a")))
        let cp = try run("/bin/cp", [mounted.path("a"), mounted.path("b")])
        #expect(cp.status == 0)
        #expect(truncate(mounted.path("b"), 6000) == 0)
        let b = client.ask("open \(mounted.path("b")) \(O_RDONLY)")
        #expect(client.ask("pread \(b) 0 4") == DirectAccessMountTests.hex(a[0..<4]))
        #expect(contents(mounted.path("a")) == a, "a differs")
        let mapper = try DirectAccessMountTests.mapper()
        #expect(mapper.ask("map \(mounted.path("b")) 6000 1") == "mount")
        #expect(mapper.ask("get 5996 4") == DirectAccessMountTests.hex(a[5996..<6000]))
        #expect(mapper.ask("past 8") == "0000000000000000")
    }

    /// mtime and ctime follow direct writes: at close, at fsync, and within
    /// a second for a writer that does neither; the size stays the mount's.
    @Test func timesFollowDirectWritesWithinASecond() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store(pattern(1 << 20, seed: 3), mounted.path("f")))
        var old = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
        func age() { #expect(utimensat(AT_FDCWD, mounted.path("f"), &old, 0) == 0) }
        func moved() -> Bool { (status(mounted.path("f"))?.st_mtim.tv_sec ?? 0) > 1_000_000_000 }
        let client = try DirectAccessMountTests.directClient()
        for step in ["close", "fsync", "nothing"] {
            age()
            #expect(!moved())
            let fd = client.ask("open \(mounted.path("f")) \(O_RDWR)")
            let writes = DirectAccessMountTests.served(mounted).writes
            #expect(client.ask("pwrite \(fd) 4096 aaaa") == "2")
            #expect(DirectAccessMountTests.served(mounted).writes == writes + 1, "\(step)")
            switch step {
            case "close": #expect(client.ask("close \(fd)") == "ok")
            case "fsync": #expect(client.ask("fsync \(fd)") == "ok")
            default: break
            }
            if step == "nothing" {
                #expect(eventually(within: 3) { moved() }, "mtime still old more than a second after a direct write")
            } else {
                #expect(moved(), "\(step)")
            }
            #expect(status(mounted.path("f"))?.st_size == 1 << 20)
            let ctime = status(mounted.path("f"))?.st_ctim.tv_sec ?? 0
            #expect(ctime > 1_000_000_000)
        }
    }

    /// Set-ID bits: a direct write to such a file goes through the mount,
    /// which drops them as for any write. A user who may not map the
    /// pool's shelves (here: nobody) is served by the mount alone.
    @Test func setIDFilesAndStrangersGoThroughTheMount() throws {
        let mounted = try MountedPool(size: 32 << 20, options: ["-o", "allow_other"])
        // The mount point open to nobody (mkdtemp made it 0700); the pool's files are not.
        #expect(chmod(mounted.scratch.path, 0o755) == 0)
        #expect(status(mounted.scratch.path + "/" + mounted.name + "/direct")!.st_mode & 0o777 == 0o600)
        #expect(store(pattern(65536, seed: 8), mounted.path("s")))
        #expect(chmod(mounted.path("s"), 0o4777) == 0)
        let client = try DirectAccessMountTests.directClient()
        let fd = client.ask("open \(mounted.path("s")) \(O_RDWR)")
        let before = DirectAccessMountTests.served(mounted)
        #expect(client.ask("pwrite \(fd) 10 bbbb") == "2")
        #expect(DirectAccessMountTests.served(mounted).writes == before.writes)
        // Root keeps the bits (CAP_FSETID); nobody's write drops them.
        #expect(status(mounted.path("s"))!.st_mode & S_ISUID != 0)
        let stranger = try run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "env",
                                           "LD_PRELOAD=" + builtExecutable("libpoolfs-direct.so"), DirectAccessMountTests.python,
                                           "-c", "import os; fd = os.open('\(mounted.path("s"))', os.O_RDWR); "
                                               + "print(os.pread(fd, 2, 10).hex(), os.pwrite(fd, bytes.fromhex('cccc'), 20))"])
        #expect(stranger.status == 0 && stranger.output == "bbbb 2", "\(stranger.output)")
        #expect(status(mounted.path("s"))!.st_mode & (S_ISUID | 0o7777) == 0o777)
        let after = DirectAccessMountTests.served(mounted)
        #expect(after.reads == before.reads && after.writes == before.writes, "\(before) → \(after)")
        var expected = pattern(65536, seed: 8)
        expected.replaceSubrange(10..<12, with: [0xbb, 0xbb])
        expected.replaceSubrange(20..<22, with: [0xcc, 0xcc])
        #expect(contents(mounted.path("s")) == expected, "s differs")
    }

    /// dup2, fork and exec: a duplicate serves the same file directly, a
    /// forked child keeps direct access and shares the position, and an
    /// exec'ed program goes on through the mount from that position.
    @Test func dupForkAndExecShareThePosition() throws {
        let mounted = try MountedPool(size: 32 << 20)
        let content = pattern(100_000, seed: 12)
        #expect(store(content, mounted.path("f")))
        let result = try run(builtExecutable("poolfs"), ["exec", "--direct", "--", DirectAccessMountTests.python, "-c", """
            import os, sys
            fd = os.open(sys.argv[1], os.O_RDONLY)
            os.dup2(fd, 9)
            os.close(fd)
            first = os.read(9, 1000)
            pid = os.fork()
            if pid == 0:
                os.write(1, ('child ' + os.read(9, 1000).hex() + '\\n').encode())
                os._exit(0)
            os.waitpid(pid, 0)
            print('parent', first.hex(), os.read(9, 1000).hex(), flush=True)
            os.set_inheritable(9, True)
            os.execv('/bin/sh', ['sh', '-c', 'od -An -v -tx1 <&9 | tr -d " \\n"; echo'])
            """, mounted.path("f")])
        let lines = result.output.split(separator: "\n").map(String.init)
        let hex = { (range: Range<Int>) in DirectAccessMountTests.hex(content[range]) }
        #expect(result.status == 0 && lines.count == 3, "\(result.output)")
        guard lines.count == 3 else { return }
        #expect(lines[0] == "child " + hex(1000..<2000))
        #expect(lines[1] == "parent " + hex(0..<1000) + " " + hex(2000..<3000))
        #expect(lines[2] == hex(3000..<content.count), "od read other bytes")
        // The parent's reads and the child's, not the exec'ed od's.
        #expect(DirectAccessMountTests.served(mounted).reads >= 3)
    }

    /// cp, tar, rsync, sqlite3 and python3 under `poolfs exec --direct`
    /// leave the same files as without it.
    @Test func toolsLeaveTheSameFilesWithAndWithoutDirectAccess() throws {
        let mounted = try MountedPool(size: 128 << 20)
        #expect(mkdir(mounted.path("src"), 0o755) == 0)
        for index in 0..<20 {
            #expect(store(pattern(index * 37_000 + 5, seed: index), mounted.path("src/f\(index)")))
        }
        let sql = "create table t(k integer primary key, v text); "
            + "with recursive n(i) as (select 1 union all select i + 1 from n where i < 5000) "
            + "insert into t select i, printf('%0100d', i) from n; update t set v = 'x' || v where k % 7 = 0; "
            + "delete from t where k % 11 = 0; select count(*), sum(length(v)) from t; pragma integrity_check;"
        var outputs: [String: [String]] = [:]
        for (name, direct) in [("plain", false), ("direct", true)] {
            let prefix = direct ? [builtExecutable("poolfs"), "exec", "--direct", "--"] : []
            func tool(_ arguments: [String]) throws -> String {
                let all = prefix + arguments
                let result = try run(all[0], Array(all.dropFirst()))
                #expect(result.status == 0, "\(name): \(arguments.joined(separator: " ")): \(result.output)")
                return result.output
            }
            let top = mounted.path(name)
            _ = try tool(["mkdir", top])
            _ = try tool(["cp", "-r", mounted.path("src"), top + "/cp"])
            _ = try tool(["tar", "-cf", top + "/src.tar", "-C", mounted.mountpoint, "src"])
            _ = try tool(["mkdir", top + "/untar"])
            _ = try tool(["tar", "-xf", top + "/src.tar", "-C", top + "/untar"])
            _ = try tool(["rsync", "-a", "--whole-file", mounted.path("src") + "/", top + "/rsync"])
            outputs[name] = [try tool(["sqlite3", top + "/db", sql]),
                             try tool([DirectAccessMountTests.python, "-c", "import hashlib, sys; "
                                 + "print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())", top + "/db"])]
        }
        #expect(outputs["plain"] == outputs["direct"])
        #expect(outputs["plain"]?.first?.hasSuffix("ok") == true)
        let diff = try run("diff", ["-r", mounted.path("plain"), mounted.path("direct")])
        // The two databases differ only if a page's bytes differ; tar's headers hold the same times.
        #expect(diff.status == 0 || !diff.output.contains("src/"), "\(diff.output)")
        for copy in ["cp", "untar/src", "rsync"] {
            let same = try run("diff", ["-r", mounted.path("src"), mounted.path("direct/" + copy)])
            #expect(same.status == 0, "\(copy): \(same.output)")
        }
        #expect(DirectAccessMountTests.served(mounted).bytesRead > 0 && DirectAccessMountTests.served(mounted).writes > 0)
    }

    /// kill -9 of a direct writer, then of the mount under a direct reader:
    /// the next mount finds the pool clean and every closed file whole.
    @Test func killsOfWriterAndMountLeaveThePoolClean() throws {
        let mounted = try MountedPool(size: 32 << 20)
        let content = pattern(1 << 20, seed: 30)
        #expect(store(content, mounted.path("kept")))
        #expect(store(pattern(1 << 20, seed: 31), mounted.path("w")))
        let writer = try DirectAccessMountTests.directClient()
        let fd = writer.ask("open \(mounted.path("w")) \(O_RDWR)")
        for offset in stride(from: 0, to: 1 << 20, by: 65536) { #expect(writer.ask("pwrite \(fd) \(offset) 5a5a") == "2") }
        writer.kill9()
        writer.wait()
        let reader = try DirectAccessMountTests.directClient()
        let kept = reader.ask("open \(mounted.path("kept")) \(O_RDONLY)")
        #expect(reader.ask("pread \(kept) 0 4") == DirectAccessMountTests.hex(content[0..<4]))
        mounted.killDaemon()
        try mounted.remount()
        #expect(contents(mounted.path("kept")) == content, "kept differs")
        let w = try #require(contents(mounted.path("w")))
        #expect(w.count == 1 << 20 && w[65536] == 0x5a && w[65537] == 0x5a)
        // The old mount's reader now hears that its mount is gone.
        #expect(reader.ask("pread \(kept) 0 4").hasPrefix("error"))
        mounted.unmount()
        let check = try run(builtExecutable("poolfs"), ["check", mounted.name, "--path", mounted.scratch.path])
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
        // A killed mount leaves its area beside the shelves: destroy takes it too.
        try mounted.remount()
        mounted.killDaemon()
        #expect(access(mounted.scratch.path + "/" + mounted.name + "/direct", F_OK) == 0)
        let destroy = try mounted.poolfs("destroy", mounted.name)
        #expect(destroy.status == 0, "\(destroy.output)")
    }

    /// A Python process with direct access that maps files: map PATH
    /// LENGTH WRITABLE (answers where the mapping's first page comes from),
    /// get OFFSET LENGTH (hex), put OFFSET HEX, has BYTE (whether the
    /// mapping holds that byte), past LENGTH (what the last page holds past
    /// the mapping's end: a writable mapping), sync, unmap.
    static let mapperScript = """
        import os, sys, mmap
        m = None
        for line in sys.stdin:
            w = line.split()
            try:
                if w[0] == 'map':
                    fd = os.open(w[1], os.O_RDWR if w[3] == '1' else os.O_RDONLY)
                    os.pread(fd, 1, 0)
                    before = set(open('/proc/self/maps'))
                    m = mmap.mmap(fd, int(w[2]), mmap.MAP_SHARED, mmap.PROT_READ | (mmap.PROT_WRITE if w[3] == '1' else 0))
                    os.close(fd)
                    new = [l for l in open('/proc/self/maps') if l not in before]
                    out = 'pool' if any('/shelf-' in l for l in new) else 'mount'
                elif w[0] == 'get': out = m[int(w[1]):int(w[1]) + int(w[2])].hex()
                elif w[0] == 'put': m[int(w[1]):int(w[1]) + len(w[2]) // 2] = bytes.fromhex(w[2]); out = 'ok'
                elif w[0] == 'has': out = str(int(bytes([int(w[1])]) in m[:]))
                elif w[0] == 'past':
                    import ctypes
                    out = ctypes.string_at(ctypes.addressof(ctypes.c_char.from_buffer(m)) + len(m), int(w[1])).hex()
                elif w[0] == 'sync': m.flush(); out = 'ok'
                elif w[0] == 'unmap': m.close(); m = None; out = 'ok'
                else: break
            except Exception as e: out = 'error ' + str(e)
            print(out, flush=True)
        """

    static func mapper() throws -> Child {
        try Child(builtExecutable("poolfs"), ["exec", "--direct", "--", python, "-c", mapperScript])
    }

    /// mmap maps the file's pool pages themselves: stores are the file's
    /// bytes for a reader through the mount at once, and the other way;
    /// msync moves the file's times. A range with a hole goes through the mount.
    @Test func mmapMapsThePoolPagesThemselves() throws {
        let mounted = try MountedPool(size: 32 << 20)
        var content = pattern(1 << 20, seed: 14)
        #expect(store(content, mounted.path("f")))
        var old = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, mounted.path("f"), &old, 0) == 0)
        let mapper = try DirectAccessMountTests.mapper()
        #expect(mapper.ask("map \(mounted.path("f")) \(1 << 20) 1") == "pool")
        #expect(mapper.ask("get 4090 12") == DirectAccessMountTests.hex(content[4090..<4102]))
        #expect(mapper.ask("put 70000 abcdef") == "ok")
        content.replaceSubrange(70_000..<70_003, with: [0xab, 0xcd, 0xef])
        let mine = open(mounted.path("f"), O_RDWR)
        defer { close(mine) }
        var seen = [UInt8](repeating: 0, count: 3)
        #expect(pread(mine, &seen, 3, 70_000) == 3 && seen == [0xab, 0xcd, 0xef])
        #expect(pwrite(mine, [UInt8](repeating: 0x42, count: 2), 2, 500_000) == 2)
        #expect(mapper.ask("get 500000 2") == "4242")
        content.replaceSubrange(500_000..<500_002, with: [0x42, 0x42])
        #expect(mapper.ask("sync") == "ok")
        #expect((status(mounted.path("f"))?.st_mtim.tv_sec ?? 0) > 1_000_000_000)
        #expect(mapper.ask("unmap") == "ok")
        #expect(contents(mounted.path("f")) == content, "f differs")
        // A range with a hole is mapped through the mount.
        #expect(store([UInt8](repeating: 3, count: 4096), mounted.path("sparse")))
        #expect(truncate(mounted.path("sparse"), 1 << 20) == 0)
        #expect(mapper.ask("map \(mounted.path("sparse")) \(1 << 20) 0") == "mount")
        #expect(mapper.ask("get 4095 2") == "0300")
    }

    /// A program that maps a file through the mount (it does not load the
    /// library) sees direct writes once they are reported (fsync here): the
    /// mount drops the kernel's cached pages of the range.
    @Test func mountMappingsSeeDirectWritesOnceReported() throws {
        let mounted = try MountedPool(size: 32 << 20)
        let content = pattern(1 << 20, seed: 15)
        #expect(store(content, mounted.path("f")))
        let mapper = try Child(DirectAccessMountTests.python, ["-c", DirectAccessMountTests.mapperScript])
        #expect(mapper.ask("map \(mounted.path("f")) \(1 << 20) 0") == "mount")
        #expect(mapper.ask("get 300000 3") == DirectAccessMountTests.hex(content[300_000..<300_003]))
        let client = try DirectAccessMountTests.directClient()
        let fd = client.ask("open \(mounted.path("f")) \(O_RDWR)")
        let before = DirectAccessMountTests.served(mounted).writes
        #expect(client.ask("pwrite \(fd) 300000 abcdef") == "3")
        #expect(DirectAccessMountTests.served(mounted).writes == before + 1)
        #expect(client.ask("fsync \(fd)") == "ok")
        #expect(eventually(within: 5) { mapper.ask("get 300000 3") == "abcdef" })
        // Bytes next to the range were not written, and still read right.
        #expect(mapper.ask("get 299998 2") == DirectAccessMountTests.hex(content[299_998..<300_000]))
    }

    /// A truncate under a mapping, and a new file taking pages at once: the
    /// mapping never shows the new file's bytes (0xff), since the mapped
    /// pages wait until it is gone; then they are freed. A mapped file's
    /// pages are not shared (cp copies them), and a snapshot says EBUSY.
    @Test func mappedPagesWaitForTheMappingAndAreNotShared() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store([UInt8](repeating: 1, count: 4 << 20), mounted.path("a")))
        let mapper = try DirectAccessMountTests.mapper()
        #expect(mapper.ask("map \(mounted.path("a")) \(4 << 20) 1") == "pool")
        let cp = try run("/bin/cp", [mounted.path("a"), mounted.path("copy")])
        #expect(cp.status == 0)
        #expect(mapper.ask("put 0 0707") == "ok")
        #expect(contents(mounted.path("copy"))?.prefix(2) == [1, 1])
        #expect(mkdir(mounted.path(".pool/snapshots/s"), 0o755) != 0 && errno == EBUSY)
        let a = open(mounted.path("a"), O_RDWR)
        #expect(ftruncate(a, 0) == 0)
        close(a)
        let free = freeBytes(mounted.mountpoint)
        #expect(store([UInt8](repeating: 0xff, count: 4 << 20), mounted.path("b")))
        #expect(mapper.ask("has 255") == "0")
        #expect(mapper.ask("unmap") == "ok")
        mapper.send("quit")
        mapper.wait()
        // Its 4 MiB came back once it was unmapped and closed.
        #expect(eventually(within: 5) { freeBytes(mounted.mountpoint) >= free - (4 << 20) + (3 << 20) },
                "\(freeBytes(mounted.mountpoint)) bytes free, \(free) before b")
        #expect(mkdir(mounted.path(".pool/snapshots/s"), 0o755) == 0)
    }
}
