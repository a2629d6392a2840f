import Foundation
import Testing
import TestSupport
@testable import PoolCore
import PoolFS

// Files in a mounted pool, driven with system calls and ordinary tools.

@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct FileMountTests {
    @Test func filesReadBackWithPOSIXOpenFlags() throws {
        let mounted = try MountedPool()
        let a = mounted.path("a")
        #expect(store(Array("hello".utf8), a))
        #expect(contents(a) == Array("hello".utf8))
        #expect(store(Array(" world".utf8), a, flags: O_WRONLY | O_APPEND))
        #expect(contents(a) == Array("hello world".utf8))
        #expect(open(a, O_WRONLY | O_CREAT | O_EXCL, 0o644) == -1 && errno == EEXIST)
        #expect(store([], a, flags: O_WRONLY | O_TRUNC))
        #expect(status(a)?.st_size == 0 && contents(a) == [])
        #expect(open(mounted.path("missing"), O_RDONLY) == -1 && errno == ENOENT)
        // Read and written by one handle, at offsets.
        let fd = open(mounted.path("b"), O_RDWR | O_CREAT, 0o600)
        defer { close(fd) }
        let data = pattern(300_000, seed: 1)
        #expect(pwrite(fd, data, data.count, 4000) == data.count)
        var back = [UInt8](repeating: 1, count: data.count + 4000)
        #expect(pread(fd, &back, back.count, 0) == back.count)
        #expect(back[0..<4000].allSatisfy { $0 == 0 } && Array(back[4000...]) == data)
        // Direct I/O: the bytes are in the pool only, not again in the page cache.
        let resident = try run("fincore", ["--raw", "--noheadings", "--bytes", "--output", "RES", mounted.path("b")])
        #expect(resident.status == 0 && resident.output == "0", "\(resident.output)")
    }

    @Test func truncationFreesPagesAndGrowthReadsZeros() throws {
        let mounted = try MountedPool()
        let path = mounted.path("t")
        let data = pattern(1 << 20, seed: 2)
        #expect(store(data, path))
        let before = freeBytes(mounted.mountpoint)
        #expect(truncate(path, 5000) == 0)
        #expect(freeBytes(mounted.mountpoint) - before == (1 << 20) - 8192)
        #expect(status(path)?.st_blocks == 16)
        // Bytes past a cut never come back.
        #expect(truncate(path, 100_000) == 0)
        let grown = try #require(contents(path))
        #expect(grown.count == 100_000 && Array(grown[0..<5000]) == Array(data[0..<5000]))
        #expect(grown[5000...].allSatisfy { $0 == 0 })
        // Sparse: a terabyte takes no pages; past the maximum, EFBIG.
        #expect(truncate(path, 1 << 40) == 0)
        #expect(status(path)?.st_size == 1 << 40 && status(path)?.st_blocks == 16)
        #expect(truncate(path, (1 << 50) + 1) == -1 && errno == EFBIG)
        // Over 4 GiB: one page written at 5 GiB.
        let fd = open(mounted.path("big"), O_RDWR | O_CREAT, 0o644)
        defer { close(fd) }
        #expect(pwrite(fd, "far", 3, 5 << 30) == 3)
        var far = [UInt8](repeating: 0, count: 3)
        #expect(pread(fd, &far, 3, 5 << 30) == 3 && far == Array("far".utf8))
        var near = [UInt8](repeating: 1, count: 4096)
        #expect(pread(fd, &near, near.count, 1 << 30) == 4096 && near.allSatisfy { $0 == 0 })
        #expect(status(mounted.path("big"))?.st_blocks == 8)
        // fallocate: space for a whole file; then a hole punched across
        // runs (each write of a hole makes one; written last first, so that
        // no write appends and takes pages ahead): every whole page inside
        // it is freed, from the runs on either side too.
        let f = open(mounted.path("f"), O_RDWR | O_CREAT, 0o644)
        defer { close(f) }
        #expect(posix_fallocate(f, 0, 16384) == 0)
        #expect(status(mounted.path("f"))?.st_size == 16384 && status(mounted.path("f"))?.st_blocks == 32)
        let ones = [UInt8](repeating: 1, count: 16384)
        for start in stride(from: 49152, through: 0, by: -16384) { #expect(pwrite(f, ones, ones.count, off_t(start)) == ones.count) }
        #expect(try run("fallocate", ["--punch-hole", "--offset", "4000", "--length", "36000", mounted.path("f")]).status == 0)
        let punched = try #require(contents(mounted.path("f")))
        #expect(punched[4000..<40000].allSatisfy { $0 == 0 })
        #expect(punched[..<4000].allSatisfy { $0 == 1 } && punched[40000...].allSatisfy { $0 == 1 })
        #expect(status(mounted.path("f"))?.st_blocks == 64, "pages 1 to 8 of 16 freed")
    }

    @Test func namesFollowPOSIX() throws {
        let mounted = try MountedPool()
        let root = mounted.mountpoint
        #expect(mkdir(root + "/d", 0o755) == 0 && mkdir(root + "/e", 0o755) == 0)
        #expect(status(root)?.st_nlink == 4)
        #expect(store(Array("one".utf8), root + "/d/one") && store(Array("two".utf8), root + "/e/two"))
        #expect(rmdir(root + "/d") == -1 && errno == ENOTEMPTY)
        #expect(unlink(root + "/d") == -1 && errno == EISDIR)
        #expect(rmdir(root + "/d/one") == -1 && errno == ENOTDIR)
        // Across directories, and over an existing name.
        #expect(rename(root + "/d/one", root + "/e/two") == 0)
        #expect(contents(root + "/e/two") == Array("one".utf8) && status(root + "/d/one") == nil)
        #expect(store(Array("three".utf8), root + "/d/three"))
        #expect(renameat2(AT_FDCWD, root + "/d/three", AT_FDCWD, root + "/e/two", 1 /* RENAME_NOREPLACE */) == -1
            && errno == EEXIST)
        #expect(renameat2(AT_FDCWD, root + "/d/three", AT_FDCWD, root + "/e/two", 2 /* RENAME_EXCHANGE */) == 0)
        #expect(contents(root + "/e/two") == Array("three".utf8) && contents(root + "/d/three") == Array("one".utf8))
        // A directory moves, but not under itself.
        #expect(mkdir(root + "/d/sub", 0o755) == 0)
        #expect(rename(root + "/d", root + "/d/sub/d") == -1 && errno == EINVAL)
        #expect(rename(root + "/d/sub", root + "/e/sub") == 0)
        #expect(status(root + "/d")?.st_nlink == 2 && status(root + "/e")?.st_nlink == 3)
        // Hard links share bytes and count; symlinks point.
        #expect(link(root + "/e/two", root + "/two-again") == 0)
        #expect(status(root + "/e/two")?.st_nlink == 2)
        #expect(store(Array("shared".utf8), root + "/two-again", flags: O_WRONLY | O_TRUNC))
        #expect(contents(root + "/e/two") == Array("shared".utf8))
        #expect(unlink(root + "/e/two") == 0 && status(root + "/two-again")?.st_nlink == 1)
        #expect(symlink("e/sub", root + "/link") == 0)
        var target = [CChar](repeating: 0, count: 64)
        #expect(readlink(root + "/link", &target, 63) == 5 && String(cString: target) == "e/sub")
        #expect(status(root + "/link").map { $0.st_mode & S_IFMT } == S_IFLNK)
        #expect(mkdir(root + "/.pool", 0o755) == -1 && errno == EEXIST)
        #expect(mkdir(root + "/" + String(repeating: "n", count: 256), 0o755) == -1 && errno == ENAMETOOLONG)
        #expect(mounted.list("") == [".pool", "d", "e", "link", "two-again"])
    }

    @Test func ownersModesAndTimesFollowPOSIX() throws {
        let mounted = try MountedPool()
        let path = mounted.path("file")
        #expect(store(Array("x".utf8), path))
        let made = try #require(status(path))
        #expect(made.st_uid == getuid() && made.st_mode & 0o777 == 0o644 & ~currentUmask())
        #expect(chmod(path, 0o600) == 0 && chown(path, 1000, 2000) == 0)
        let changed = try #require(status(path))
        #expect(changed.st_mode & 0o7777 == 0o600 && changed.st_uid == 1000 && changed.st_gid == 2000)
        // Strictly later: the change is nanoseconds after the create at most.
        #expect(Timestamp(changed.st_ctim) > Timestamp(made.st_ctim))
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_500_000_000, tv_nsec: 5)]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        let stamped = try #require(status(path))
        #expect(stamped.st_atim.tv_sec == 1_000_000_000 && stamped.st_atim.tv_nsec == 123_456_789)
        #expect(stamped.st_mtim.tv_sec == 1_500_000_000 && stamped.st_mtim.tv_nsec == 5)
        #expect(store(Array("more".utf8), path, flags: O_WRONLY | O_APPEND))
        #expect(try #require(status(path)).st_mtim.tv_sec > 1_500_000_000)
        // Under a setgid directory, new entries take its group; directories keep the bit.
        #expect(mkdir(mounted.path("shared"), 0o775) == 0 && chown(mounted.path("shared"), 0, 4321) == 0)
        #expect(chmod(mounted.path("shared"), 0o2775) == 0)
        #expect(store([1], mounted.path("shared/f")) && mkdir(mounted.path("shared/sub"), 0o755) == 0)
        #expect(status(mounted.path("shared/f"))?.st_gid == 4321)
        #expect(status(mounted.path("shared/sub")).map { $0.st_gid == 4321 && $0.st_mode & S_ISGID != 0 } == true)
        // Only the mount's owner reaches it (no allow_other).
        let stranger = try run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "stat", mounted.mountpoint])
        #expect(stranger.status != 0 && stranger.output.contains("Permission denied"), "\(stranger.output)")
    }

    @Test func xattrsAreKeptAndShowWhereAFileLives() throws {
        let mounted = try MountedPool()
        let path = mounted.path("x")
        #expect(store(pattern(10_000, seed: 3), path))
        #expect(setxattr(path, "user.colour", "blue", 4, 0) == 0)
        #expect(setxattr(path, "user.colour", "red", 3, 1 /* XATTR_CREATE */) == -1 && errno == EEXIST)
        #expect(setxattr(path, "user.other", "1", 1, 2 /* XATTR_REPLACE */) == -1 && errno == ENODATA)
        var value = [CChar](repeating: 0, count: 256)
        #expect(getxattr(path, "user.colour", &value, 255) == 4 && String(cString: value) == "blue")
        #expect(getxattr(path, "user.colour", &value, 2) == -1 && errno == ERANGE)
        // A well-formed ACL (version 2; owner rw, group r, other r), which
        // the kernel passes on: the mount keeps no ACLs and says so.
        let acl: [UInt8] = [2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255,
                            0x20, 0, 4, 0, 255, 255, 255, 255]
        #expect(setxattr(path, "system.posix_acl_access", acl, acl.count, 0) == -1 && errno == EOPNOTSUPP)
        let names = xattrNames(path)
        #expect(names == ["user.poolfs.heap", "user.poolfs.runs", "user.poolfs.nodes", "user.colour"])
        #expect(removexattr(path, "user.colour") == 0 && getxattr(path, "user.colour", &value, 255) == -1 && errno == ENODATA)
        #expect(xattr(path, "user.poolfs.heap") == "default")
        #expect(xattr(path, "user.poolfs.runs")?.hasSuffix("+3") == true)
        #expect(xattr(path, "user.poolfs.nodes") == "0:3")
        // A directory's heap is where its new files' pages come from, inherited below it.
        #expect(mkdir(mounted.path(".pool/heaps/fast"), 0o755) == 0)
        #expect(mkdir(mounted.path("hot"), 0o755) == 0)
        #expect(setxattr(mounted.path("hot"), "user.poolfs.heap", "nope", 4, 0) == -1 && errno == EINVAL)
        #expect(setxattr(mounted.path("hot"), "user.poolfs.heap", "fast", 4, 0) == 0)
        #expect(mkdir(mounted.path("hot/deeper"), 0o755) == 0)
        #expect(store(pattern(100_000, seed: 4), mounted.path("hot/deeper/file")))
        #expect(xattr(mounted.path("hot/deeper/file"), "user.poolfs.heap") == "fast")
        let pool = try Pool.open(name: "mnt", at: mounted.scratch.path)
        #expect(try pool.openHeap(name: "fast").stats().pages == 25)
        pool.close()
        // A heap that holds files cannot be destroyed.
        #expect(rmdir(mounted.path(".pool/heaps/fast")) == -1 && errno == ENOTEMPTY)
        let dump = try run("getfattr", ["-d", mounted.path("hot/deeper/file")])
        #expect(dump.output.contains("user.poolfs.heap=\"fast\"") && dump.output.contains("user.poolfs.runs=\"0:"),
                "\(dump.output)")
    }

    @Test func anUnlinkedOpenFileKeepsItsPagesUntilItsLastClose() throws {
        let mounted = try MountedPool()
        let data = pattern(256 << 10, seed: 5)
        #expect(store(data, mounted.path("doomed")))
        let fd = open(mounted.path("doomed"), O_RDONLY)
        #expect(fd >= 0)
        let before = freeBytes(mounted.mountpoint)
        #expect(unlink(mounted.path("doomed")) == 0)
        var st = stat()
        #expect(fstat(fd, &st) == 0 && st.st_nlink == 0)
        // Other files take pages meanwhile; the open file's stay its own.
        for i in 0..<8 { #expect(store(pattern(64 << 10, seed: i), mounted.path("other\(i)"))) }
        var back = [UInt8](repeating: 0, count: data.count)
        #expect(pread(fd, &back, back.count, 0) == back.count && back == data)
        let whileOpen = freeBytes(mounted.mountpoint)
        #expect(before - whileOpen == 8 * (64 << 10))
        close(fd)
        // The release is asynchronous: poll the file system itself, up to 10 s.
        let deadline = Date().addingTimeInterval(10)
        var freed = false
        while !freed && Date() < deadline {
            freed = freeBytes(mounted.mountpoint) - whileOpen == data.count
            if !freed { sched_yield() }
        }
        #expect(freed, "\(freeBytes(mounted.mountpoint) - whileOpen) bytes came back, not \(data.count)")
    }

    @Test func aHundredThousandEntriesListWithStableOffsets() throws {
        let mounted = try MountedPool(size: 64 << 20)
        let directory = mounted.path("many")
        #expect(mkdir(directory, 0o755) == 0)
        let count = 100_000
        for i in 0..<count where mknod(directory + "/e\(i)", S_IFREG | 0o644, 0) != 0 {
            Issue.record("mknod e\(i): \(String(cString: strerror(errno)))")
            return
        }
        let stream = try #require(opendir(directory))
        defer { closedir(stream) }
        var seen: [String: Int] = [:]
        func readSome(_ limit: Int) {
            var n = 0
            while n < limit, let entry = readdir(stream) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                seen[name, default: 0] += 1
                n += 1
            }
        }
        readSome(count / 2)
        // Entries come and go mid-listing, on both sides of the cursor.
        var removed = Set<String>()
        for i in stride(from: 0, to: count, by: 10) {
            #expect(unlink(directory + "/e\(i)") == 0)
            removed.insert("e\(i)")
        }
        for i in 0..<5000 { #expect(mknod(directory + "/n\(i)", S_IFREG | 0o644, 0) == 0) }
        readSome(Int.max)
        #expect(seen.values.allSatisfy { $0 == 1 }, "an entry was listed twice")
        let missed = (0..<count).map { "e\($0)" }.filter { !removed.contains($0) && seen[$0] == nil }
        #expect(missed.isEmpty, "\(missed.count) entries that stayed were not listed, e.g. \(missed.prefix(3))")
        #expect(seen["."] == 1 && seen[".."] == 1)
        #expect(status(directory)?.st_nlink == 2)
    }

    @Test func ordinaryToolsCopyArchiveCloneAndQuery() throws {
        let mounted = try MountedPool(size: 256 << 20, pageSize: 64 << 10)
        let source = repositoryRoot + "/Sources"
        let before = freeBytes(mounted.mountpoint)
        #expect(try run("cp", ["-a", source, mounted.path("cp")]).status == 0)
        #expect(try run("diff", ["-r", source, mounted.path("cp")]).status == 0)
        // Small files share pages (a page of 64 KiB each took 13 times
        // their bytes); the log's reserve, two chunks of 1 MiB (removals on
        // a full pool, and a rewrite), comes with the first writes, and df
        // counts the runs threads hold in their caches as used.
        // Runs the mount's threads hold in their caches (up to a 64th of
        // the pool, 4 MiB here) vary with scheduling: left out.
        let sourceBytes = try #require(Int(try run("du", ["-sb", source]).output.prefix { $0.isNumber }))
        let info = mounted.text(".pool/info.json") ?? ""
        let cached = info.firstRange(of: #/"cachedBytes" *: *([0-9]+)/#).flatMap { Int(info[$0].split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) }
        let held = try #require(cached, "no cachedBytes in .pool/info.json")
        #expect(before - freeBytes(mounted.mountpoint) - held < 2 * sourceBytes + (4 << 20))
        #expect(try run("rsync", ["-a", source + "/", mounted.path("rsync/")]).status == 0)
        #expect(try run("diff", ["-r", source, mounted.path("rsync")]).status == 0)
        let archive = mounted.scratch.path + "/sources.tar"
        #expect(try run("tar", ["-C", repositoryRoot, "-cf", archive, "Sources"]).status == 0)
        #expect(try run("tar", ["-C", mounted.mountpoint, "-xf", archive]).status == 0)
        #expect(try run("diff", ["-r", source, mounted.path("Sources")]).status == 0)
        #expect(try run("tar", ["-C", mounted.mountpoint, "-cf", mounted.path("again.tar"), "Sources"]).status == 0)
        #expect(try run("cmp", [archive, mounted.path("again.tar")]).status == 0)
        let clone = try run("git", ["clone", "-q", "--no-local", repositoryRoot, mounted.path("repo")])
        #expect(clone.status == 0, "\(clone.output)")
        let fsck = try run("git", ["-C", mounted.path("repo"), "fsck", "--full", "--strict"])
        #expect(fsck.status == 0, "\(fsck.output)")
        let database = mounted.path("data.sqlite")
        let sql = """
            create table t(id integer primary key, body blob);
            with recursive n(x) as (select 1 union all select x + 1 from n where x < 20000)
            insert into t select x, randomblob(200 + x % 700) from n;
            delete from t where id % 3 = 0;
            pragma integrity_check;
            select count(*) from t;
            """
        let sqlite = try run("sqlite3", [database, sql])
        #expect(sqlite.output == "ok\n13334", "\(sqlite.output)")
        try mounted.remount()
        #expect(try run("diff", ["-r", source, mounted.path("cp")]).status == 0)
        #expect(try run("sqlite3", [database, "pragma integrity_check;"]).output == "ok")
        #expect(try run("git", ["-C", mounted.path("repo"), "fsck", "--full"]).status == 0)
    }

    @Test func sharedWritableMmapReachesThePool() throws {
        let mounted = try MountedPool()
        let path = mounted.path("mapped")
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        #expect(fd >= 0 && ftruncate(fd, 65536) == 0)
        let mapped = mmap(nil, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        let memory = try #require(mapped == MAP_FAILED ? nil : mapped, "mmap: \(String(cString: strerror(errno)))")
        var data = pattern(65536, seed: 6)
        memory.copyMemory(from: data, byteCount: data.count)
        #expect(msync(memory, 65536, MS_SYNC) == 0)
        // Writes through a descriptor show in the mapping, and the other way.
        let other = open(path, O_WRONLY)
        #expect(pwrite(other, "written", 7, 1000) == 7)
        close(other)
        data.replaceSubrange(1000..<1007, with: Array("written".utf8))
        #expect(memcmp(memory, data, data.count) == 0)
        #expect(munmap(memory, 65536) == 0)
        close(fd)
        #expect(contents(path) == data)
        try mounted.remount()
        #expect(contents(path) == data)
    }

    @Test func concurrentWritersLoseNothing() throws {
        let mounted = try MountedPool(size: 64 << 20)
        let shared = open(mounted.path("shared"), O_RDWR | O_CREAT, 0o644)
        defer { close(shared) }
        let block = 48 << 10, blocks = 64, writers = 4
        let mountpoint = mounted.mountpoint
        DispatchQueue.concurrentPerform(iterations: writers * 2) { job in
            let writer = job % writers
            if job < writers {
                // Each writer its own file…
                let data = pattern(blocks * block, seed: 100 + writer)
                _ = store(data, mountpoint + "/own\(writer)")
            } else {
                // …and every writer every fourth block of one file.
                for b in stride(from: writer, to: blocks, by: writers) {
                    let data = pattern(block, seed: b)
                    _ = pwrite(shared, data, block, off_t(b * block))
                }
            }
        }
        for writer in 0..<writers {
            #expect(contents(mounted.path("own\(writer)")) == pattern(blocks * block, seed: 100 + writer))
        }
        let whole = try #require(contents(mounted.path("shared")))
        #expect(whole.count == blocks * block)
        for b in 0..<blocks where Array(whole[(b * block)..<((b + 1) * block)]) != pattern(block, seed: b) {
            Issue.record("block \(b) of the shared file is wrong")
        }
    }

    @Test func aFullPoolAnswersENOSPCAndRecovers() throws {
        let mounted = try MountedPool()
        let keep = pattern(100_000, seed: 7)
        #expect(store(keep, mounted.path("keep")))
        let fd = open(mounted.path("filler"), O_WRONLY | O_CREAT, 0o644)
        let chunk = pattern(1 << 20, seed: 8)
        var written = 0
        var failure: Int32 = 0
        while written < 64 << 20 {
            let n = write(fd, chunk, chunk.count)
            if n < 0 { failure = errno; break }
            written += n
        }
        close(fd)
        #expect(failure == ENOSPC, "write failed with \(failure) after \(written) bytes")
        #expect(written > 16 << 20)
        #expect(contents(mounted.path("keep")) == keep)
        #expect(unlink(mounted.path("filler")) == 0)
        // The kernel sends a close's release without waiting for it, so the
        // filler's pages may go a moment after the unlink: wait for them
        // (another test's busy CPU can hold the release up).
        for _ in 0..<10_000 where freeBytes(mounted.mountpoint) < written { usleep(1000) }
        #expect(freeBytes(mounted.mountpoint) >= written)
        #expect(store(chunk + chunk, mounted.path("after")))
        #expect(contents(mounted.path("after")) == chunk + chunk)
    }

    @Test func aDamagedMetadataLogIsRefusedAndLeftAlone() throws {
        let mounted = try MountedPool()
        #expect(store(pattern(5000, seed: 9), mounted.path("kept")))
        mounted.unmount()
        let pool = try Pool.open(name: mounted.name, at: mounted.scratch.path)
        let log = pool.rootAddress
        try pool.store(0x0bad_0bad, at: log)
        pool.close()
        let poolfs = builtExecutable("poolfs")
        let mount = try run(poolfs, ["mount", mounted.name, mounted.mountpoint, "-f", "--path", mounted.scratch.path])
        #expect(mount.status == 1 && mount.output.split(separator: "\n").count == 1, "\(mount.output)")
        #expect(mount.output.contains("damaged") && mount.output.contains("metadata log"), "\(mount.output)")
        let check = try run(poolfs, ["check", mounted.name, "--path", mounted.scratch.path])
        #expect(check.status == 1 && check.output.contains("problem: file system:"), "\(check.output)")
        let reopened = try Pool.open(name: mounted.name, at: mounted.scratch.path)
        let word = try reopened.load(at: log)
        #expect(reopened.rootAddress == log && word == 0x0bad_0bad)
        reopened.close()
    }

    /// The guarantee: files closed before a kill -9 of the mount read back
    /// after remounting, and the pool checks clean.
    @Test func closedFilesSurviveKill9AtAnyMoment() throws {
        let mounted = try MountedPool(size: 128 << 20)
        var closed: [Int: Bool] = [:]   // index: still there
        var generator = SystemRandomNumberGenerator()
        for round in 0..<4 {
            let directory = mounted.path("round\(round)")
            #expect(mkdir(directory, 0o755) == 0)
            let writer = try Child(builtExecutable("PoolTestHelper"), ["file-writer", directory])
            let stopAfter = Int.random(in: 3...40, using: &generator)
            var lines = 0
            var closedThisRound = 0
            var lastLine = ""
            func note(_ line: String) {
                lastLine = line
                let words = line.split(separator: " ")
                guard words.count == 2, let i = Int(words[1]) else { return }
                switch words[0] {
                case "closed":
                    closed[round * 100_000 + i] = true
                    closedThisRound += 1
                case "removing": closed[round * 100_000 + i] = nil   // either way, if the kill comes now
                case "removed": closed[round * 100_000 + i] = false
                default: break
                }
            }
            while lines < stopAfter, let line = writer.readLine() {
                note(line)
                lines += 1
            }
            // The writer was working, not failing, when the kill came…
            #expect(lines == stopAfter && !lastLine.hasPrefix("error") && closedThisRound >= 2, "\(lastLine)")
            mounted.killDaemon()
            while let line = writer.readLine() { note(line) }
            // …and stopped only because the mount went away (its connection
            // cut, a request on a ring canceled with the ring, or the
            // directory gone once the dead mount was taken away).
            let gone = ["not connected", "connection abort", "Operation canceled", "No such file or directory"]
            #expect(lastLine.hasPrefix("error:") && gone.contains { lastLine.contains($0) }, "\(lastLine)")
            writer.wait()
            try mounted.remount()
            for (key, present) in closed {
                let path = mounted.path("round\(key / 100_000)/f\(key % 100_000)")
                if present {
                    let found = contents(path)
                    #expect(found == writerBytes(key % 100_000),
                            "round \(round): \(path) \(found.map { "has \($0.count) bytes" } ?? "is missing")")
                } else {
                    #expect(status(path) == nil, "round \(round): \(path) came back")
                }
            }
        }
        mounted.unmount()
        let check = try run(builtExecutable("poolfs"), ["check", mounted.name, "--path", mounted.scratch.path])
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
        #expect(check.output.contains(" 0 unreferenced"), "\(check.output)")
    }
}
