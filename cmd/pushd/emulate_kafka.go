package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// kafkaStandIn is `pushd emulate --kafka ADDR`: an in-memory, single-broker
// Kafka (franz-go's kfake, the broker pushd's own tests use) for trying the
// Kafka source without a cluster. It keeps nothing on disk, has no
// replication, security or retention: for trying and tests, never
// production.
type kafkaStandIn struct {
	cluster *kfake.Cluster
	addr    string
}

// startKafkaStandIn serves a one-broker cluster on addr (host:port; port
// 0 picks a free one) with topics created, each with partitions
// partitions; producers may create other topics by using them.
func startKafkaStandIn(addr string, topics []string, partitions int) (*kafkaStandIn, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--kafka %q: want host:port: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("--kafka %q: port must be 0..65535", addr)
	}
	if partitions < 1 {
		return nil, fmt.Errorf("--kafka-partitions must be at least 1, got %d", partitions)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
		// kfake listens on 127.0.0.1; listen on the host asked for instead.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}),
	}
	var seeded []string
	for _, t := range topics {
		if t = strings.TrimSpace(t); t != "" {
			seeded = append(seeded, t)
		}
	}
	if len(seeded) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(partitions), seeded...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("--kafka %s: %w", addr, err)
	}
	return &kafkaStandIn{cluster: c, addr: c.ListenAddrs()[0]}, nil
}

// Addr is the broker's address (the bootstrap server).
func (k *kafkaStandIn) Addr() string { return k.addr }

// Close stops the broker; everything it held is gone.
func (k *kafkaStandIn) Close() { k.cluster.Close() }
