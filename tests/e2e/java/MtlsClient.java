// A Java 17 HttpClient presenting the identity of a keystore and trusting a truststore (both written by
// roles/client). Usage: java MtlsClient.java URL TRUSTSTORE KEYSTORE|- TYPE; passwords come from the
// environment (TRUSTSTORE_PASSWORD, KEYSTORE_PASSWORD), never from the command line.
// Prints the HTTP status, then the body; a failed handshake prints "ERROR <exception>" and exits 1.
import java.io.FileInputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.time.Duration;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class MtlsClient {
    static KeyStore load(String path, String type, String password) throws Exception {
        KeyStore store = KeyStore.getInstance(type);
        try (FileInputStream in = new FileInputStream(path)) {
            store.load(in, password.toCharArray());
        }
        return store;
    }

    public static void main(String[] args) throws Exception {
        String type = args[3];
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(load(args[1], type, System.getenv("TRUSTSTORE_PASSWORD")));
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        if (args[2].equals("-")) {
            kmf.init(null, null);
        } else {
            char[] password = System.getenv("KEYSTORE_PASSWORD").toCharArray();
            kmf.init(load(args[2], type, System.getenv("KEYSTORE_PASSWORD")), password);
        }
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        HttpClient client = HttpClient.newBuilder().sslContext(context).connectTimeout(Duration.ofSeconds(10)).build();
        try {
            HttpResponse<String> response = client.send(HttpRequest.newBuilder(URI.create(args[0])).build(),
                    HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode());
            System.out.println(response.body());
        } catch (java.io.IOException e) {
            System.out.println("ERROR " + e);
            System.exit(1);
        }
    }
}
