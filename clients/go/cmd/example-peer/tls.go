package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// transportOption is how the peer reaches the server: plaintext by default
// (a server without LLM_TLS_CERT_FILE), TLS with -tls or -cacert, and mutual
// TLS when -cert and -key give the peer's own certificate (a server with
// LLM_TLS_CLIENT_CA_FILE admits only clients that present one its CA signed).
// The flags are grpcurl's. The server's name is checked against the address
// dialled, so a certificate for 127.0.0.1 needs that IP address in its SAN.
func transportOption(useTLS bool, caFile, certFile, keyFile string) (grpc.DialOption, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("-cert and -key go together (the client certificate and its private key)")
	}
	if !useTLS && caFile == "" && certFile == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("-cacert: %w", err)
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-cacert: %s holds no PEM certificate", caFile)
		}
	} // else: the system's CAs
	if certFile != "" {
		certificate, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("-cert/-key: %w", err)
		}
		config.Certificates = []tls.Certificate{certificate}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(config)), nil
}
