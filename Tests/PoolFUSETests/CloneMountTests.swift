import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Clones through the mount: cp (copy_file_range) shares pages, writes
/// through write(2) and mmap copy them first, and a kill -9 among clones
/// and deletions leaves counts that check finds exact.
@Suite(.enabled(if: MountedPool.available, "needs root and /dev/fuse"))
struct CloneMountTests {
    @Test func cpSharesPagesAndEachSideKeepsItsOwnWrites() throws {
        let mounted = try MountedPool(size: 64 << 20)
        let content = pattern(4 << 20, seed: 9)
        #expect(store(content, mounted.path("a")))
        let free = freeBytes(mounted.mountpoint)
        let cp = try run("/bin/cp", [mounted.path("a"), mounted.path("b")])
        #expect(cp.status == 0, "\(cp.output)")
        // 1024 pages shared, none copied (a log chunk may come with the record).
        #expect(free - freeBytes(mounted.mountpoint) < 64 << 10, "\(free - freeBytes(mounted.mountpoint)) bytes taken")
        #expect(contents(mounted.path("b")) == content)

        // A byte through write(2), a page through a shared mapping.
        let b = open(mounted.path("b"), O_RDWR)
        #expect(pwrite(b, [UInt8(0xee)], 1, 5000) == 1)
        let mapping = try #require(mmap(nil, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, b, 1 << 20))
        mapping.initializeMemory(as: UInt8.self, repeating: 0x5a, count: 8192)
        #expect(msync(mapping, 8192, MS_SYNC) == 0)
        munmap(mapping, 8192)
        close(b)
        var expected = content
        expected[5000] = 0xee
        expected.replaceSubrange(1 << 20..<(1 << 20) + 8192, with: Array(repeating: 0x5a, count: 8192))
        #expect(contents(mounted.path("b")) == expected)
        #expect(contents(mounted.path("a")) == content)
        try mounted.remount()
        #expect(contents(mounted.path("b")) == expected)
        #expect(contents(mounted.path("a")) == content)
        // FICLONE never reaches a FUSE file system on this kernel: cp says so.
        let reflink = try run("/bin/cp", ["--reflink=always", mounted.path("a"), mounted.path("c")])
        #expect(reflink.status != 0 && reflink.output.contains("Operation not supported"), "\(reflink.output)")
        mounted.unmount()
        let check = try run(builtExecutable("poolfs"), ["check", mounted.name, "--path", mounted.scratch.path])
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
    }

    /// kill -9 of the mount while a shell clones a file, writes into each
    /// clone and deletes old ones: the original and every finished clone
    /// read back, and the pool checks clean with nothing unreferenced.
    @Test func countsStayExactAcrossKill9DuringClonesAndDeletes() throws {
        let mounted = try MountedPool(size: 64 << 20)
        let content = pattern((1 << 20) + 123, seed: 4)
        #expect(store(content, mounted.path("a")))
        // Clone i gets an 'x' at this offset; clone i - 3 goes.
        func offset(_ i: Int) -> Int { i * 997 % content.count }
        func script(_ round: Int) -> String { """
            cd '\(mounted.mountpoint)' || exit 1
            i=0; p=r\(round)c
            while [ $i -lt 3000 ]; do
              cp a $p$i || exit 1; echo "cloned $i"
              printf x | dd of=$p$i bs=1 seek=$((i * 997 % \(content.count))) conv=notrunc status=none || exit 1; echo "wrote $i"
              if [ $i -ge 3 ]; then echo "removing $((i - 3))"; rm $p$((i - 3)) || exit 1; echo "removed $((i - 3))"; fi
              i=$((i + 1))
            done
            """
        }
        // What each clone may hold after the kill: its possible contents.
        var state: [Int: String] = [:]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<3 {
            let shell = try Child("/bin/sh", ["-c", script(round)])
            let stopAfter = Int.random(in: 5...60, using: &generator)
            var lines = 0
            func note(_ line: String) {
                let words = line.split(separator: " ")
                guard words.count == 2, let i = Int(words[1]) else { return }
                state[round * 10_000 + i] = String(words[0])
            }
            while lines < stopAfter, let line = shell.readLine() {
                note(line)
                lines += 1
            }
            #expect(lines == stopAfter, "the shell stopped early")
            mounted.killDaemon()
            while let line = shell.readLine() { note(line) }
            shell.wait()
            try mounted.remount()
            #expect(contents(mounted.path("a")) == content)
            for (key, done) in state {
                let i = key % 10_000, path = mounted.path("r\(key / 10_000)c\(i)")
                var written = content
                written[offset(i)] = UInt8(ascii: "x")
                let found = contents(path)
                switch done {
                case "wrote": #expect(found == written, "\(path)")
                case "cloned": #expect(found == content || found == written, "\(path)")
                case "removed": #expect(found == nil, "\(path) came back")
                default: break   // removing: there or not
                }
            }
        }
        mounted.unmount()
        let check = try run(builtExecutable("poolfs"), ["check", mounted.name, "--path", mounted.scratch.path])
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
        #expect(check.output.contains(" 0 unreferenced"), "\(check.output)")
    }
}
