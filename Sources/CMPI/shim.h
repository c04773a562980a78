#ifndef SUDER_CMPI_SHIM_H
#define SUDER_CMPI_SHIM_H
#include <mpi.h>

/* OpenMPI defines its handles as macros over global structs, which Swift cannot import. */
static inline MPI_Comm suder_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype suder_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype suder_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype suder_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype suder_mpi_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Op suder_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op suder_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op suder_mpi_min(void) { return MPI_MIN; }
static inline void *suder_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Errhandler suder_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int suder_mpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }
static inline int suder_mpi_max_library_version_string(void) { return MPI_MAX_LIBRARY_VERSION_STRING; }
static inline int suder_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }

#endif
