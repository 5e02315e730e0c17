"""Apache Arrow Flight, the specialist's choice for bulk arrays, on loopback.

Run as ``python -m bench.flight_server``; it prints its port. ``do_get``
with the ticket ``b"<n>"`` creates the same float64 array as the Django
peers and streams it as one record batch; ``do_put`` reads the array sent and
turns it into an ndarray, as an ``upload`` service would.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight

from bench.site.data import make_array

SCHEMA = pa.schema([("data", pa.float64())])


class ArrayServer(flight.FlightServerBase):
    """Serves and receives one float64 column."""

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        """Stream a new array of ``int(ticket)`` elements."""
        array = pa.array(make_array(int(ticket.ticket)))
        return flight.RecordBatchStream(pa.table([array], schema=SCHEMA))

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        """Receive an array and report its size back as metadata."""
        column = reader.read_all().column(0)
        received = column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)
        data = received.to_numpy(zero_copy_only=False)
        writer.write(str(data.nbytes).encode())


def main() -> None:
    """Listen on 127.0.0.1 only, print the port, serve until stopped."""
    server = ArrayServer("grpc://127.0.0.1:0")
    print(server.port, flush=True)
    server.serve()


if __name__ == "__main__":
    main()
