#!/usr/bin/perl
# The `web` ship of the example fleet: a tiny HTTP/1.0 server written against perl-base
# (in every Debian), so that `make run` needs nothing that is not already there.
# Usage: hello-server.pl PORT
use strict;
use warnings;
use IO::Socket::INET;

my $port = shift // 8000;
my $server = IO::Socket::INET->new(
    LocalAddr => "127.0.0.1:$port",
    Listen    => 64,
    ReuseAddr => 1,
) or die "cannot listen on 127.0.0.1:$port: $!\n";
$| = 1;
print "listening on 127.0.0.1:$port\n";
$SIG{TERM} = sub { print "stopping\n"; exit 0 };
while (my $client = $server->accept) {
    $client->autoflush(1);
    my $request = <$client> // '';
    while (my $line = <$client>) {
        last if $line =~ /^\r?\n$/;
    }
    my ($method, $path) = split ' ', $request;
    $path //= '/';
    my $body = "hello from the example fleet (you asked for $path)\n";
    print $client "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
        . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n"
        . ($method && $method eq 'HEAD' ? '' : $body);
    close $client;
}
